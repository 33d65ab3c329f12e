"""Cheap text-density estimates: characters on a page, from its PDF text layer or its pixels.

The image estimate runs on a downscaled grayscale copy (a few ms per page):
1. ink = pixels darker than the page background by a margin (background = the 90th percentile),
   without drawn vertical rules (box frames, table cell rules: they would merge a box's lines
   into one band); the page is split into blocks and columns (``ocrstream.ink.regions``: columns
   at vertical gaps blank on every row, or blank but for a few full-width lines such as a title
   over two columns, which become blocks of their own);
2. per column, the row profile (ink pixels per row) splits the page into text-line bands, after removing
   rows inked solidly along their span (table rules, underlines; ``ocrstream.ink``);
3. inside each band, ink columns are joined across gaps narrower than the band height (letter and
   word gaps, not column gutters) and their total width is the line's extent;
4. characters = sum over lines of extent / (CHAR_ASPECT * band height).

CHAR_ASPECT (mean advance width / ink band height) was fitted on 240 pages per size (256, 384, 512
px) from ``ocrstream.data.render`` in the training fonts, levels 1-3. Re-measured after the column
split on 7,200 fresh pages: median estimate/truth 0.98-1.01, p10/p90 0.84/1.20, lowest 0.57 (before
the split, two-column pages went as low as 0.06), highest 3.0 (one page: a single short line of
x-height letters, whose band is half a normal line's).
tests/compression/test_density.py keeps the fit honest on fresh random pages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ocrstream.ink import INK_MARGIN, drop_vertical_rules, line_bands, regions, runs

MAX_SIDE = 1024  # downscale bigger renders first: line bands stay >= ~6 px for 10-pt text at 100 dpi
CHAR_ASPECT = 0.55  # mean glyph advance / ink-band height (fitted, see module doc)


@dataclass(frozen=True)
class DensityEstimate:
    chars: float
    lines: int
    source: str  # "text-layer" | "image"
    ink_fraction: float = 0.0

    def text_tokens(self, chars_per_token: float) -> float:
        if chars_per_token <= 0:
            raise ValueError(f"chars_per_token must be positive, got {chars_per_token}")
        return self.chars / chars_per_token


def _count(ink: np.ndarray) -> tuple[float, int]:
    """Characters and lines in one column of ink (steps 2-4 of the module doc)."""
    chars, lines = 0.0, 0
    for top, bot in line_bands(ink):
        band = bot - top
        glyphs = runs(ink[top:bot].any(axis=0))  # [W] glyph column runs
        if not glyphs:
            continue
        # join runs across gaps narrower than the band height (inside a line of text)
        extent, (s0, e0) = 0, glyphs[0]
        for s, e in glyphs[1:]:
            if s - e0 <= band:
                e0 = e
            else:
                extent += e0 - s0
                s0, e0 = s, e
        extent += e0 - s0
        chars += extent / (CHAR_ASPECT * band)
        lines += 1
    return chars, lines


def estimate_from_image(image: Image.Image) -> DensityEstimate:
    """Characters on a rendered page, from ink rows and line extents (see module doc)."""
    w, h = image.size
    if w <= 0 or h <= 0:
        raise ValueError(f"empty page image {w}x{h}")
    g = image.convert("L")
    scale = min(1.0, MAX_SIDE / max(w, h))
    if scale < 1.0:
        g = g.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.BILINEAR)
    a = np.asarray(g, dtype=np.int16)  # [H, W]
    bg = float(np.percentile(a, 90))
    ink = a < bg - INK_MARGIN  # [H, W] bool
    frac = float(ink.mean())
    ink = drop_vertical_rules(ink)
    bands = line_bands(ink)
    if not bands:
        return DensityEstimate(0.0, 0, "image", frac)
    chars, lines = 0.0, 0
    for top, bot, cols in regions(ink):
        for left, right in cols:
            c, n = _count(ink[top:bot, left:right])
            chars, lines = chars + c, lines + n
    return DensityEstimate(chars, lines, "image", frac)  # extent / band height is scale-free


def estimate_from_text_layer(n_chars: int) -> DensityEstimate:
    if n_chars < 0:
        raise ValueError(f"text layer char count must be >= 0, got {n_chars}")
    return DensityEstimate(float(n_chars), 0, "text-layer")


def estimate(image: Image.Image | None, text_layer_chars: int | None = None) -> DensityEstimate:
    """The text layer when present (exact and free), else the image estimate."""
    if text_layer_chars is not None and text_layer_chars < 0:
        raise ValueError(f"text layer char count must be >= 0, got {text_layer_chars}")
    if text_layer_chars is not None and text_layer_chars > 0:
        return estimate_from_text_layer(text_layer_chars)
    if image is None:
        raise ValueError("need a page image or a positive text_layer_chars to estimate density")
    return estimate_from_image(image)


def pdf_text_chars(pdf, page_index: int) -> int:  # noqa: ANN001 - pypdfium2.PdfDocument
    """Characters (whitespace runs counted once) on a PDF page's text layer (0 for scanned pages)."""
    page = pdf[page_index]
    tp = page.get_textpage()
    try:
        text = tp.get_text_range()
    finally:
        tp.close()
        page.close()
    return len(" ".join(text.split()))  # same whitespace collapsing as the CER reference
