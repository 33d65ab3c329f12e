"""How every entry point decodes a page: the settings, the output guard and the retry ladder.

``DecodeSettings`` (from ``DecoderConfig``: budget, no-repeat n-gram rule, ladder, guard) is what
the decoder service and the context API's read-back both decode with; ``read_down_ladder`` walks
pages down the ladder for both. The guard detects repetition loops and outputs that never end.

The ladder is declared data with a bound (style: olmOCR's TEMPERATURE_BY_ATTEMPT): each rung is a
temperature, or a different encoder mode at greedy temperature. After the last rung the decoder
falls a page back to its PDF text layer (flagged) or marks it failed.

Pure policy: decoding and token lookup are passed in, so this module needs no backend.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ocrstream.config import DecoderConfig
from ocrstream.errors import OcrStreamError, TransientError
from ocrstream.textdist import levenshtein


class Decoded(Protocol):
    """What a decode returns (``ocrstream.backends.base.Decoded``, ``DecodeResult``)."""

    text: str
    token_ids: list[int]
    stopped: bool  # hit a stop token before the budget
    n_tokens: int


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


@dataclass(frozen=True)
class DecodeSettings:
    """One decode policy: the guard (with the token budget), the ladder, the no-repeat n-gram rule."""

    guard: GuardConfig
    ladder: tuple[Rung, ...]
    ngram: tuple[int, int] | None  # (n, window); None = off

    @property
    def max_new_tokens(self) -> int:
        return self.guard.max_new_tokens

    @classmethod
    def from_config(cls, cfg: DecoderConfig | None = None) -> DecodeSettings:
        """The configured policy (``OCRSTREAM_DECODER_*``; None = the defaults)."""
        d = cfg or DecoderConfig()
        return cls(
            GuardConfig(d.max_new_tokens, d.loop_min_repeats, d.loop_min_tokens),
            parse_ladder(d.ladder),
            (d.ngram, d.ngram_window) if d.ngram > 0 else None,
        )


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


@dataclass
class PageRead:
    """One page on its way down the ladder: every attempt, the first result, the accepted one."""

    prompt: str
    attempts: list[dict] = field(default_factory=list)
    best: Decoded | None = None  # the accepted result, else the first one
    done: bool = False  # a rung's result passed the guard
    decode_ms: float = 0.0


# (rung index, rung, prompt, token blobs) -> one result per blob
DecodeFn = Callable[[int, Rung, str, list[bytes]], Sequence[Decoded]]


def read_down_ladder(
    pages: Sequence[PageRead],
    settings: DecodeSettings,
    decode: DecodeFn,
    tokens: Callable[[PageRead, Rung], bytes],
    judge: Callable[[PageRead, Decoded], tuple[str, str]] | None = None,
    rungs: Sequence[Rung] | None = None,
) -> None:
    """Decode ``pages`` rung by rung until each passes the guard (``check``, then ``judge`` if
    given) or the rungs run out; pages of one prompt are decoded together. ``tokens`` gives a
    page's token blob for a rung (a mode rung may need other tokens); a permanent error there is
    that rung's attempt, a TransientError propagates. ``rungs`` defaults to the settings' ladder."""
    for i, rung in enumerate(settings.ladder if rungs is None else rungs):
        todo = [p for p in pages if not p.done]
        if not todo:
            return
        by_prompt: dict[str, list[tuple[PageRead, bytes]]] = {}
        for p in todo:
            try:
                blob = tokens(p, rung)
            except TransientError:
                raise
            except OcrStreamError as exc:
                p.attempts.append({**rung.describe(), "outcome": "error", "detail": str(exc)})
                continue
            by_prompt.setdefault(p.prompt, []).append((p, blob))
        for prompt, group in by_prompt.items():
            t0 = time.perf_counter()
            results = decode(i, rung, prompt, [b for _, b in group])
            ms = (time.perf_counter() - t0) * 1000 / len(group)
            for (p, _), res in zip(group, results, strict=True):
                outcome, detail = check(res, settings.guard)
                if outcome == "ok" and judge is not None:
                    outcome, detail = judge(p, res)
                p.decode_ms += ms
                p.attempts.append(
                    {**rung.describe(), "outcome": outcome, "detail": detail, "n_tokens": res.n_tokens}
                )
                if p.best is None:
                    p.best = res
                if outcome == "ok":
                    p.best, p.done = res, True


def sampling_seed(tokens: list[bytes], prompt: str, temperature: float) -> int | None:
    """A sampled rung's seed from what it decodes (None for greedy): the same pages give the same
    text on every run, through every entry point, redelivered or not."""
    if temperature <= 0:
        return None
    h = hashlib.sha256(f"{prompt}\0{temperature!r}".encode())
    for blob in tokens:
        h.update(hashlib.sha256(blob).digest())
    return int.from_bytes(h.digest()[:8], "little")


def agreement(a: str, b: str, limit: int = 2000) -> float:
    """1 - character error rate of ``a`` against ``b`` (whitespace collapsed, first ``limit``
    characters, so the cost stays bounded), clipped at 0: how far the model's page text agrees
    with the PDF's own text layer. Recorded, not enforced (a scan's text layer can be wrong)."""
    ref, hyp = " ".join(b.split())[:limit], " ".join(a.split())[:limit]
    if not ref:
        return 1.0 if not hyp else 0.0
    return max(0.0, 1.0 - levenshtein(ref, hyp) / len(ref))
