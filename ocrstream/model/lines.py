"""Page -> text-line strips, the views a line-strip model (the embedded model) reads.

One geometry for training and serving: the trainer cuts its synthetic lines with ``line_strip``
exactly as a page's lines are cut here.

1. ``find_text_lines``: columns and, per column, text-line bands from the ink analysis of
   ``ocrstream.ink``, in reading order (columns left to right, lines top to
   bottom). Each line keeps its column's typical band: a line of x-height letters ("aown run")
   is scaled like its neighbours, not blown up; a line much taller than the typical one is a
   heading and is scaled by its own band.
2. ``line_strip``: the line's box grown to the band, padded by ``PAD`` of the band, scaled to
   ``height`` px (the band then fills about 24 of 32 px, a glyph about 12 px wide) and optionally
   squeezed horizontally (the compression ladder: fewer vision tokens per character).
3. ``pad_strip``: right-padded with the strip's background to a multiple of the encoder's
   ``width_multiple``, so a strip's vision tokens do not depend on what it is batched with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ocrstream.ink import INK_MARGIN
from ocrstream.ink import line_bands as _lines
from ocrstream.ink import regions as _regions
from ocrstream.ink import runs as _runs

STRIP_HEIGHT = 32
PAD = 0.15  # of the band height, above and below the ink (and before/after it)
HEADING_BAND = 1.3  # type size (top to baseline) / the column's typical above which a line is a heading


@dataclass(frozen=True)
class TextLine:
    """One text line on the page."""

    box: tuple[int, int, int, int]  # (left, top, right, bottom) ink bounds in page px
    band: float  # px of page the strip's band stands for: max(own band, column typical band)
    column: int
    heading: bool = False  # band well above its column's typical band
    gap_before: float = 0.0  # blank px above it in its column, in units of the typical band

    def to_json(self) -> dict:
        return {
            "box": list(self.box),
            "band": round(self.band, 3),
            "column": self.column,
            "heading": self.heading,
            "gap_before": round(self.gap_before, 3),
        }

    @classmethod
    def from_json(cls, d: dict) -> TextLine:
        return cls(
            tuple(d["box"]), float(d["band"]), int(d["column"]), bool(d["heading"]), float(d["gap_before"])
        )


def ink_mask(gray: np.ndarray) -> tuple[np.ndarray, float]:
    """(ink [H, W] bool, background grey level) of a grayscale page."""
    bg = float(np.percentile(gray, 90))
    return gray < bg - INK_MARGIN, bg


def find_text_lines(image: Image.Image) -> list[TextLine]:
    """Text lines in reading order ([] for a blank page)."""
    a = np.asarray(image.convert("L"), dtype=np.int16)  # [H, W]
    ink, _ = ink_mask(a)
    out: list[TextLine] = []
    blocks = _regions(ink)
    # per block and column: its line bands [top, bottom) in page rows, and each line's type size
    # from the top of the ink to the baseline (descenders, which many short titles lack and most
    # body lines have, would make a band look smaller or larger than its type)
    found = []
    for y0, y1, cols in blocks:
        for left, right in cols:
            col = ink[y0:y1, left:right]
            bands = [(t + y0, b + y0) for t, b in _lines(col)]
            found.append((left, right, bands, [_rise(ink[t:b, left:right]) for t, b in bands]))
    every = [b - t for _, _, bands, _ in found for t, b in bands]
    every_rise = [r for *_, rise in found for r in rise]
    for ci, (left, right, bands, rise) in enumerate(found):
        if not bands:
            continue
        col = ink[:, left:right]
        # a block of one or two lines (a title over two columns) is measured against the page
        few = len(bands) < 3 and len(blocks) > 1
        typical = float(np.median(every if few else [b - t for t, b in bands]))
        typical_rise = float(np.median(every_rise if few else rise))
        prev_bot = None
        for (top, bot), r in zip(bands, rise, strict=True):
            runs = _runs(col[top:bot].any(axis=0))
            if not runs:
                continue
            own = bot - top
            gap = 0.0 if prev_bot is None else (top - prev_bot) / max(1.0, typical)
            prev_bot = bot
            out.append(
                TextLine(
                    box=(left + runs[0][0], top, left + runs[-1][1], bot),
                    band=max(float(own), typical),
                    column=ci,
                    heading=r > HEADING_BAND * typical_rise,
                    gap_before=gap,
                )
            )
    return out


def _rise(band: np.ndarray) -> int:
    """Rows from a line's top ink to its baseline: the last row holding at least a quarter of the
    busiest row's ink (descenders are sparse below it)."""
    rows = band.sum(axis=1)
    busy = np.nonzero(rows >= 0.25 * rows.max())[0]
    return int(busy[-1]) + 1 if len(busy) else band.shape[0]


def strip_box(box: tuple[float, float, float, float], band: float, pad: float = PAD) -> tuple[float, ...]:
    """The page area a strip shows: the ink box grown vertically to ``band`` around its middle,
    then padded by ``pad * band`` on every side."""
    left, top, right, bot = box
    if bot - top < band:
        mid = 0.5 * (top + bot)
        top, bot = mid - 0.5 * band, mid + 0.5 * band
    p = pad * band
    return (left - p, top - p, right + p, bot + p)


def line_strip(
    gray: Image.Image,
    box: tuple[float, float, float, float],
    band: float,
    height: int = STRIP_HEIGHT,
    squeeze: float = 1.0,
    pad: float = PAD,
    bg: int = 255,
) -> Image.Image:
    """The grayscale strip [height, w] of one line of a grayscale page ("L"); what lies outside
    the page reads as background ``bg``."""
    if gray.mode != "L":
        gray = gray.convert("L")
    x0, y0, x1, y1 = strip_box(box, band, pad)
    scale = height / (y1 - y0)
    w = max(1, int(round((x1 - x0) * scale * squeeze)))
    # PIL's transform samples any box, also past the page edge (filled with the background)
    return gray.transform(
        (w, height),
        Image.Transform.EXTENT,
        (x0, y0, x1, y1),
        resample=Image.Resampling.BILINEAR,
        fillcolor=bg,
    )


def page_strips(
    image: Image.Image,
    lines: list[TextLine],
    height: int = STRIP_HEIGHT,
    squeeze: float = 1.0,
    max_width: int | None = None,
) -> list[list[Image.Image]]:
    """Each line's strip, cut into pieces no wider than ``max_width`` (one list per line)."""
    gray = image.convert("L")
    bg = int(np.percentile(np.asarray(gray), 90))
    out = []
    for ln in lines:
        s = line_strip(gray, ln.box, ln.band, height, squeeze, bg=bg)
        out.append(split_wide(s, max_width) if max_width else [s])
    return out


def strip_width(line: TextLine, height: int = STRIP_HEIGHT, squeeze: float = 1.0, pad: float = PAD) -> int:
    """Width in px of ``line``'s strip (what ``line_strip`` makes of it), without drawing it."""
    x0, y0, x1, y1 = strip_box(line.box, line.band, pad)
    return max(1, int(round((x1 - x0) * height / (y1 - y0) * squeeze)))


def count_tokens(
    image: Image.Image,
    squeeze: float = 1.0,
    height: int = STRIP_HEIGHT,
    token_width: int = 8,
    width_multiple: int = 32,
    max_width: int = 2048,
) -> tuple[int, int]:
    """(decoder placeholders, encoder vision tokens) a page costs in a lines mode: each strip
    padded to ``width_multiple``, too-wide lines cut in pieces, two layout slots per strip."""
    placeholders = tokens = 0
    for ln in find_text_lines(image):
        w = strip_width(ln, height, squeeze)
        pieces = -(-w // max_width)
        for k in range(pieces):
            pw = min(max_width, w - k * max_width)
            n = min(max_width, -(-pw // width_multiple) * width_multiple) // token_width
            tokens += n
            placeholders += n + 2
    return placeholders, tokens


def background(strip: Image.Image) -> int:
    return int(np.percentile(np.asarray(strip.convert("L")), 90))


def pad_strip(strip: Image.Image, multiple: int, max_width: int | None = None) -> Image.Image:
    """Right-pad with the strip's background to a multiple of ``multiple`` px (cut at max_width)."""
    w = -(-strip.width // multiple) * multiple
    if max_width is not None:
        w = min(w, max_width)
    if w == strip.width:
        return strip
    out = Image.new("L", (w, strip.height), background(strip))
    out.paste(strip.crop((0, 0, min(strip.width, w), strip.height)), (0, 0))
    return out


def split_wide(strip: Image.Image, max_width: int) -> list[Image.Image]:
    """Cut a strip wider than ``max_width`` at word gaps (hard cuts inside a too-long word)."""
    if strip.width <= max_width:
        return [strip]
    a = np.asarray(strip, dtype=np.int16)
    ink, _ = ink_mask(a)
    runs = _runs(ink.any(axis=0))
    min_gap = max(2, strip.height // 5)
    gaps = [(e0, s1) for (_, e0), (s1, _) in zip(runs, runs[1:], strict=False) if s1 - e0 >= min_gap]
    out, start = [], 0
    while strip.width - start > max_width:
        cut = None
        for g0, g1 in gaps:
            if start < g0 <= start + max_width:
                cut = (g0, g1)  # the last gap that still fits
        if cut is None:
            cut = (start + max_width, start + max_width)
        out.append(strip.crop((start, 0, cut[0], strip.height)))
        start = cut[1]
    if start < strip.width:
        out.append(strip.crop((start, 0, strip.width, strip.height)))
    return out


def strips_to_tensor(strips: list[Image.Image], width: int | None = None) -> torch.Tensor:
    """Grayscale strips -> normalised RGB pixels [B, 3, H, W] (mean = std = 0.5), each right-padded
    with its own background to ``width`` (default: the widest)."""
    width = width or max(s.width for s in strips)
    h = strips[0].height
    arr = np.empty((len(strips), h, width), dtype=np.float32)
    for i, s in enumerate(strips):
        a = np.asarray(s.convert("L"), dtype=np.float32)
        arr[i] = background(s)
        arr[i, :, : min(width, a.shape[1])] = a[:, :width]
    t = torch.from_numpy(arr).div_(127.5).sub_(1.0)  # [B, H, W] in [-1, 1]
    return t[:, None].expand(-1, 3, -1, -1).contiguous()
