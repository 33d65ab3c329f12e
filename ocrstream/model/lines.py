"""Page -> text-line strips, the views a line-strip model (the embedded model) reads.

One geometry for training and serving: the trainer cuts its synthetic lines with ``line_strip``
exactly as a page's lines are cut here.

1. ``find_text_lines``: columns and, per column, text-line bands from the ink analysis of
   ``ocrstream.ink`` (drawn vertical rules taken out first, so a boxed listing or a ruled table
   does not become one band), in reading order (columns left to right, lines top to bottom). A
   band, or a run of close bands, much taller than a text line whose pieces side by side hold
   lines at different heights (a table row whose cells wrap to different line counts) is read
   piece by piece, each top to bottom, as a PDF text layer reads a table row. Each line keeps its
   column's typical band: a line of x-height letters ("aown run") is scaled like its neighbours,
   not blown up; a line much taller than the typical one is a heading and is scaled by its own
   band.
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

from ocrstream.ink import INK_MARGIN, ROW_GAP, drop_vertical_rules, split_band
from ocrstream.ink import line_bands as _lines
from ocrstream.ink import regions as _regions
from ocrstream.ink import runs as _runs

STRIP_HEIGHT = 32
PAD = 0.15  # of the band height, above and below the ink (and before/after it)
SPLIT_SCALE_PCT = 25  # percentile of a column's bands: the text line tall bands are measured against
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
    ink = drop_vertical_rules(ink_mask(a)[0])
    blocks = _regions(ink)
    # per block and column: its line bands [top, bottom) in page rows
    cols = []
    for y0, y1, cs in blocks:
        for left, right in cs:
            cols.append((left, right, [(t + y0, b + y0) for t, b in _lines(ink[y0:y1, left:right])]))
    few = len(blocks) > 1
    # bands much taller than a text line may be table rows whose cells hold lines at different
    # heights: split them. A text line is first a column's lower-quartile band, not its median
    # (where such rows are half the bands, the median is a row); once some split, the median of
    # the lines, split with again until the lines stop changing
    current = [[(left, right, t, b) for t, b in bands] for left, right, bands in cols]
    line = _typical([[b - t for *_, t, b in col] for col in current], few, SPLIT_SCALE_PCT)
    for _ in range(3):
        found = [_column_lines(ink, c, scale) for c, scale in zip(cols, line, strict=True)]
        again = [[(ln.left, ln.right, ln.top, ln.bot) for ln in lines] for lines in found]
        if again == current:
            break
        current = again
        line = _typical([[b - t for *_, t, b in col] for col in current], few)
    typical = _typical([[ln.bot - ln.top for ln in lines] for lines in found], few)
    # each line's type size from the top of the ink to the baseline (descenders, which many short
    # titles lack and most body lines have, would make a band look smaller or larger than its type)
    rises = [[_rise(ink[ln.top : ln.bot, ln.left : ln.right]) for ln in lines] for lines in found]
    typical_rise = _typical(rises, few)
    out: list[TextLine] = []
    for ci, lines in enumerate(found):
        for ln, r in zip(lines, rises[ci], strict=True):
            runs = _runs(ink[ln.top : ln.bot, ln.left : ln.right].any(axis=0))
            if not runs:
                continue
            gap = 0.0 if ln.above is None else (ln.top - ln.above) / max(1.0, typical[ci])
            out.append(
                TextLine(
                    box=(ln.left + runs[0][0], ln.top, ln.left + runs[-1][1], ln.bot),
                    band=max(float(ln.bot - ln.top), typical[ci]),
                    column=ci,
                    heading=r > HEADING_BAND * typical_rise[ci],
                    gap_before=gap,
                )
            )
    return out


@dataclass(frozen=True)
class _Line:
    """A line's page area before measuring: its column (or table cell) piece and its band."""

    left: int
    right: int
    top: int
    bot: int
    above: int | None  # bottom of the line above it in its column (its cell's, in a split band)


def _column_lines(ink: np.ndarray, col: tuple[int, int, list[tuple[int, int]]], line: float) -> list[_Line]:
    """A column's lines in reading order: its bands, where lines sit at different heights side by
    side (a table row's cells) the pieces of the band, or of a run of bands closer than
    ``ROW_GAP``, from ``ink.split_band``: each piece's lines top to bottom before the next piece's.

    A run, not only a band: two cells' lines at different heights need not overlap in rows (a line
    without descenders above one without ascenders leaves a blank row or two), and each band of
    the row alone would then read in the wrong order (the right cell's first line first).
    """
    left, right, bands = col
    out: list[_Line] = []
    prev = None
    for run in _close_runs(bands, ROW_GAP * line):
        areas = [(t, b, split_band(ink[t:b, left:right], line)) for t, b in run]
        if len(run) > 1:
            top, bot = run[0][0], run[-1][1]
            pieces = split_band(ink[top:bot, left:right], line)
            areas = [(top, bot, pieces)] if len(pieces) > 1 else areas
        for top, bot, pieces in areas:
            for x0, x1, sub in pieces:
                above = prev  # a cell's first line: blank above it down from the row's line above
                for t, b in sub:
                    out.append(_Line(left + x0, left + x1, top + t, top + b, above))
                    above = top + b
            prev = bot
    return out


def _close_runs(bands: list[tuple[int, int]], gap: float) -> list[list[tuple[int, int]]]:
    """Consecutive bands grouped while the blank between them is less than ``gap`` rows."""
    out: list[list[tuple[int, int]]] = []
    for t, b in bands:
        if out and t - out[-1][-1][1] < gap:
            out[-1].append((t, b))
        else:
            out.append([(t, b)])
    return out


def _typical(values: list[list[int]], few: bool, pct: float = 50) -> list[float]:
    """Per column, the median (or ``pct`` percentile) of its values; a column of one or two lines
    in a page of several blocks (a title over two columns) takes the page's."""
    every = [v for vs in values for v in vs]
    return [float(np.percentile(every if few and len(vs) < 3 else vs, pct)) if vs else 0.0 for vs in values]


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
