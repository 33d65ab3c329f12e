"""Edit distance, shared by the evaluation (CER) and the decoder's text-layer agreement check.

rapidfuzz's C++ Levenshtein (bit-parallel): the decoder's guard calls this per decoded page, where
the pure-Python DP took about 2 s at its 2,000-character cap. Imported on first use: every service
imports the decoder handler through ``services/wiring.py``, but only the decoder role (and
training) installs rapidfuzz.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from functools import cache
from types import ModuleType


@cache
def _impl() -> ModuleType:
    from rapidfuzz.distance import Levenshtein

    return Levenshtein


def levenshtein(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Insertions + deletions + substitutions turning ``a`` into ``b`` (strings or sequences of
    hashable items, e.g. token ids)."""
    return int(_impl().distance(a, b))
