"""Reflow a page into small text views, for models that read one small view at a time.

The embedded model reads a 256-px view holding about eight lines of 14-24 px text (what it was
trained on); a whole A4 page squeezed into one view is illegible to it, and plain tiles cut lines
and columns apart so their outputs cannot be put back in reading order. Reflow instead:

1. finds text columns and, per column, text-line bands (``ocrstream.ink``: the
   same ink analysis as the density estimate);
2. crops every line, scales it so the column's typical line band is ``band_px`` high;
3. wraps each scaled line at word gaps into pieces that fit the view width;
4. stacks the pieces top to bottom into views of ``side`` x ``side`` on a white page.

Reading order is column by column, top to bottom; the views' texts joined with newlines are the
page's text (line breaks inside a reflowed line become spaces once whitespace is collapsed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ocrstream.ink import INK_MARGIN
from ocrstream.ink import columns as _columns
from ocrstream.ink import line_bands as _lines
from ocrstream.ink import runs as _runs

BAND_PX = 20  # ink band of a line in a view: about an 18-px font, mid training range (14-24 px)
MARGIN = 10  # px of white around the text in a view
PITCH = 1.45  # line pitch / band height (training pages use line spacing 1.15-1.6 x font size)


@dataclass(frozen=True)
class Line:
    """One text line on the page: its box and the scale its column gets."""

    box: tuple[int, int, int, int]  # (left, top, right, bottom) in page pixels
    scale: float  # view px per page px


def find_lines(image: Image.Image, band_px: int = BAND_PX) -> list[Line]:
    """Text lines in reading order (columns left to right, lines top to bottom)."""
    a = np.asarray(image.convert("L"), dtype=np.int16)  # [H, W]
    bg = float(np.percentile(a, 90))
    ink = a < bg - INK_MARGIN
    out = []
    for left, right in _columns(ink):
        col = ink[:, left:right]
        bands = _lines(col)
        if not bands:
            continue
        # one scale per column from its typical band: a line of x-height letters keeps its size
        typical = float(np.median([b - t for t, b in bands]))
        scale = band_px / max(1.0, typical)
        for top, bot in bands:
            runs = _runs(col[top:bot].any(axis=0))
            if runs:
                out.append(Line((left + runs[0][0], top, left + runs[-1][1], bot), scale))
    return out


def _pieces(line: Image.Image, width: int, min_gap: int) -> list[Image.Image]:
    """Cut a scaled line image at word gaps into pieces at most ``width`` wide."""
    if line.width <= width:
        return [line]
    a = np.asarray(line.convert("L"), dtype=np.int16)
    ink = a < float(np.percentile(a, 90)) - INK_MARGIN
    runs = _runs(ink.any(axis=0))
    # word gaps: blank column runs between inked runs that are at least min_gap wide
    gaps = [(e0, s1) for (_, e0), (s1, _) in zip(runs, runs[1:], strict=False) if s1 - e0 >= min_gap]
    out, start = [], 0
    while line.width - start > width:
        cut = None
        for g0, g1 in gaps:
            if start < g0 <= start + width:
                cut = (g0, g1)  # the last gap that still fits
        if cut is None:  # one word wider than the view: hard cut
            cut = (start + width, start + width)
        out.append(line.crop((start, 0, cut[0], line.height)))
        start = cut[1]
    if start < line.width:
        out.append(line.crop((start, 0, line.width, line.height)))
    return out


def reflow_views(
    image: Image.Image, side: int = 256, band_px: int = BAND_PX, margin: int = MARGIN, pitch: float = PITCH
) -> list[Image.Image]:
    """Page image -> views of ``side`` x ``side`` holding its text lines in reading order ([] if blank)."""
    rgb = image.convert("RGB")
    width = side - 2 * margin
    step = max(band_px, int(round(band_px * pitch)))
    views: list[Image.Image] = []
    view, y = None, margin
    for ln in find_lines(rgb, band_px):
        left, top, right, bot = ln.box
        pad = max(1, int(round(0.15 * (bot - top))))
        crop = rgb.crop((max(0, left - pad), max(0, top - pad), right + pad, bot + pad))
        w = max(1, int(round(crop.width * ln.scale)))
        h = max(1, int(round(crop.height * ln.scale)))
        scaled = crop.resize((w, h), Image.Resampling.LANCZOS)
        for piece in _pieces(scaled, width, min_gap=max(2, band_px // 4)):
            if view is None or y + piece.height > side - margin:
                view = Image.new("RGB", (side, side), (255, 255, 255))
                views.append(view)
                y = margin
            view.paste(
                piece.crop((0, 0, min(piece.width, width), min(piece.height, side - 2 * margin))), (margin, y)
            )
            y += max(step, piece.height)
    return views
