"""The characters the embedded line reader is trained to read, and text normalisation.

Printable ASCII plus the typographic and Latin-1 characters that born-digital English documents
use most (curly quotes, dashes, bullets, accented letters). ``normalize`` (``ocrstream.textdist``)
is applied to every reference text before scoring and to every training label: NFKC (ligatures
such as U+FB01 "fi" become their letters, as in a PDF text layer read by a person) and whitespace
runs collapsed.
"""

from __future__ import annotations

import unicodedata

from ocrstream.textdist import normalize  # noqa: F401 - labels are normalised as references are

ASCII = "".join(chr(i) for i in range(32, 127))
EXTRA = (
    "\u2018\u2019\u201c\u201d"  # ‘ ’ “ ”
    "\u2013\u2014\u2022\u2026"  # – — • …
    "\u00a9\u00ae\u00b0\u00a7\u00b6\u00d7\u00f7\u00b1\u00b5\u00b7"  # © ® ° § ¶ × ÷ ± µ ·
    "\u20ac\u00a3\u00a5\u00a2\u00ab\u00bb"  # € £ ¥ ¢ « »
    "\u00e9\u00e8\u00ea\u00eb\u00e0\u00e2\u00e4\u00e1\u00e7\u00f1\u00f3\u00f4\u00f6\u00fa\u00fc\u00ed\u00ee\u00ef"
    "\u00c9\u00c0\u00c7\u00d6\u00dc\u00c4\u00df\u00e6\u00f8\u00c5\u00e5"
)
# NFKC rewrites a few of these ("…" -> "...", "µ" -> "μ"): labels are normalised, so keep only
# the characters normalisation leaves alone.
CHARSET = ASCII + "".join(c for c in EXTRA if unicodedata.normalize("NFKC", c) == c)

# Category pools for random-character lines (glyph practice without a language prior).
LOWER = "abcdefghijklmnopqrstuvwxyz"
UPPER = LOWER.upper()
DIGITS = "0123456789"
PUNCT = "".join(c for c in ASCII if not c.isalnum() and c != " ")
