"""Edit distance and the character error rate, shared by the evaluation, the compression curve and
the decoder's text-layer agreement check.

rapidfuzz's C++ Levenshtein (bit-parallel): the decoder's guard calls this per decoded page, where
the pure-Python DP took about 2 s at its 2,000-character cap. Imported on first use: every service
imports the decoder handler through ``services/wiring.py``, but only the decoder role (and
training) installs rapidfuzz.

CER = edit distance / reference length after ``normalize`` (NFKC: ligatures such as U+FB01 "fi"
become their letters, as in a PDF text layer read by a person; whitespace runs as one space).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Hashable, Sequence
from functools import cache
from types import ModuleType

_WS = re.compile(r"\s+")


@cache
def _impl() -> ModuleType:
    from rapidfuzz.distance import Levenshtein

    return Levenshtein


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Insertions + deletions + substitutions turning ``a`` into ``b`` (strings or sequences of
    hashable items, e.g. token ids)."""
    return int(_impl().distance(a, b))


def normalize(text: str) -> str:
    """NFKC, then every whitespace run as one space, trimmed."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def cer(ref: str, hyp: str) -> float:
    """Character error rate of ``hyp`` against ``ref`` (normalised); 0 for two empties."""
    r, h = normalize(ref), normalize(hyp)
    if not r:
        return 0.0 if not h else 1.0
    return levenshtein(r, h) / len(r)


def corpus_cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Summed edit distance / summed reference length (normalised)."""
    errs = sum(levenshtein(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True))
    return errs / max(1, sum(len(normalize(r)) for r in refs))
