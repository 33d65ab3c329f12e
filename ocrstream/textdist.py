"""Edit distance, shared by the evaluation (CER) and the decoder's text-layer agreement check.

Pure Python, no heavy imports: the decoder service calls it per page.
"""

from __future__ import annotations

from collections.abc import Sequence


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Insertions + deletions + substitutions turning ``a`` into ``b`` (O(len(a) * len(b)))."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]
