"""Output guard: detect repetition loops and outputs that never end; the retry ladder.

The ladder is declared data with a bound (style: olmOCR's TEMPERATURE_BY_ATTEMPT): each rung is a
temperature, or a different encoder mode at greedy temperature. After the last rung a page falls
back to its PDF text layer (flagged) or is marked failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocrstream.backends.base import Decoded
from ocrstream.textdist import levenshtein


@dataclass(frozen=True)
class Rung:
    temperature: float = 0.0
    mode: str | None = None  # None = the page's own mode

    def describe(self) -> dict:
        return {"temperature": self.temperature, "mode": self.mode}


def parse_ladder(spec: str) -> tuple[Rung, ...]:
    """``"t=0.0;t=0.2;mode=small"`` -> rungs. At least one rung; the first is the normal decode."""
    rungs = []
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        key, _, value = part.partition("=")
        if key == "t":
            try:
                rungs.append(Rung(temperature=float(value)))
            except ValueError as exc:
                raise ValueError(f"ladder rung {part!r}: temperature is not a number") from exc
        elif key == "mode" and value:
            rungs.append(Rung(temperature=0.0, mode=value))
        else:
            raise ValueError(f"ladder rung {part!r} in {spec!r}: expected t=<float> or mode=<name>")
    if not rungs:
        raise ValueError(f"empty decode ladder {spec!r}")
    return tuple(rungs)


@dataclass(frozen=True)
class GuardConfig:
    max_new_tokens: int = 1024
    loop_min_repeats: int = 4
    loop_min_tokens: int = 24
    max_period: int = 128
    tail: int = 256  # n-gram diversity window
    min_diversity: float = 0.25  # distinct 4-grams / 4-grams in the tail


def find_loop(ids: list[int], cfg: GuardConfig) -> str:
    """'' when fine; else a short description of the repetition found at the end of ``ids``."""
    n = len(ids)
    for p in range(1, min(cfg.max_period, n // cfg.loop_min_repeats) + 1):
        reps = 1
        while (reps + 1) * p <= n and ids[n - (reps + 1) * p : n - reps * p] == ids[n - p :]:
            reps += 1
        if reps >= cfg.loop_min_repeats and reps * p >= cfg.loop_min_tokens:
            return f"period {p} repeated {reps}x at the end"
    tail = ids[-cfg.tail :]
    if len(tail) >= cfg.tail:
        grams = [tuple(tail[i : i + 4]) for i in range(len(tail) - 3)]
        div = len(set(grams)) / len(grams)
        if div < cfg.min_diversity:
            return f"tail 4-gram diversity {div:.2f} < {cfg.min_diversity}"
    return ""


def check(res: Decoded, cfg: GuardConfig) -> tuple[str, str]:
    """(outcome, detail): outcome is ok | loop | no_stop."""
    loop = find_loop(res.token_ids, cfg)
    if loop:
        return "loop", loop
    if not res.stopped:
        return "no_stop", f"{res.n_tokens} tokens without a stop token (budget {cfg.max_new_tokens})"
    return "ok", ""


def agreement(a: str, b: str, limit: int = 2000) -> float:
    """1 - character error rate of ``a`` against ``b`` (whitespace collapsed, first ``limit``
    characters, so the cost stays bounded), clipped at 0: how far the model's page text agrees
    with the PDF's own text layer. Recorded, not enforced (a scan's text layer can be wrong)."""
    ref, hyp = " ".join(b.split())[:limit], " ".join(a.split())[:limit]
    if not ref:
        return 1.0 if not hyp else 0.0
    return max(0.0, 1.0 - levenshtein(ref, hyp) / len(ref))
