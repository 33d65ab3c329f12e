"""Per-step token choice for the engine's running batch: one device->host transfer per step.

The no-repeat n-gram rule is ``generation.ngram_banned_tokens``'s, kept incrementally per page
(``NgramIndex``: a dict from each (n-1)-gram to where it started), so a step costs one lookup per
row instead of a scan of the window; all rows' bans are applied in one indexed write, then one
argmax. Sampled rows (temperature > 0) draw on the host with their own generator, so a seed gives
the same tokens on any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ocrstream.model.generation import choose_tokens


class NgramIndex:
    """Banned next ids of one sequence under the windowed no-repeat n-gram rule, kept as ids arrive.

    Equals ``ngram_banned_tokens(tokens, n, window, whitelist)`` after every ``append``: the ids
    that would complete an n-gram whose first n-1 ids equal the last n-1 and which starts within
    the last ``window`` ids.
    """

    def __init__(self, n: int, window: int, whitelist: Sequence[int] = ()) -> None:
        if n < 1 or window < n:
            raise ValueError(f"ngram (n, window) needs 1 <= n <= window, got {(n, window)}")
        self.n, self.window = n, window
        self.whitelist = frozenset(whitelist)
        self.tokens: list[int] = []
        self._starts: dict[tuple[int, ...], list[int]] = {}  # (n-1)-gram -> start positions

    def append(self, tok: int) -> None:
        self.tokens.append(tok)
        # the (n-1)-gram now complete at the end can be a match from the next n-gram on
        s = len(self.tokens) - (self.n - 1)
        if self.n > 1 and s >= 0:
            self._starts.setdefault(tuple(self.tokens[s:]), []).append(s)

    def banned(self) -> set[int]:
        length, n = len(self.tokens), self.n
        if length < n or n == 1:  # n == 1 bans nothing (the official slicing; see generation.py)
            return set()
        starts = self._starts.get(tuple(self.tokens[length - (n - 1) :]), ())
        lo, hi = max(0, length - self.window), length - n  # starts i in [lo, hi]
        out = {self.tokens[i + n - 1] for i in starts if lo <= i <= hi}
        return out - self.whitelist


def ban(logits: torch.Tensor, banned_per_row: Sequence[set[int]]) -> None:
    """Set logits[i, t] = -inf for every banned t of row i, in one indexed write."""
    rows = [i for i, b in enumerate(banned_per_row) for _ in b]
    if not rows:
        return
    toks = [t for b in banned_per_row for t in b]
    dev = logits.device
    logits[torch.tensor(rows, device=dev), torch.tensor(toks, device=dev)] = float("-inf")


def choose_row(
    logits_row: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """One sampled id from a [V] row, drawn on the host (the generator is a CPU one)."""
    return int(choose_tokens(logits_row[None].float().cpu(), temperature, top_p, generator)[0])
