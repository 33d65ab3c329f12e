"""Page ink analysis: text columns and, per column, text-line bands of a page's ink mask.

One analysis behind the density estimate (``ocrstream.compression.density``) and the model's line
finder (``ocrstream.model.lines``, the legacy ``reflow``), so the cost a page is predicted to have
and the strips the model reads come from the same bands. Ink = pixels darker than the page
background (its 90th percentile grey) by ``INK_MARGIN``. The steps:

1. ``drop_vertical_rules``: long thin vertical runs (box frames, table cell rules) leave the mask;
   they ink every row of a boxed block and would merge all its lines into one band;
2. ``regions`` / ``columns``: blocks and text columns, split at gutters blank on (almost) every row;
3. ``line_bands``: per column, text-line bands from the rows with ink, drawn horizontal rules
   (rows inked solidly along their span) left out;
4. ``split_band``: a band (or, in ``model.lines``, a run of close bands) much taller than a text
   line whose pieces side by side hold lines at different heights (the cells of a table row that
   wrap to different line counts) is cut into those pieces, each with its own line bands.
"""

from __future__ import annotations

import numpy as np

INK_MARGIN = 48  # grey levels below the background that count as ink
MIN_BAND = 3  # rows: thinner bands are rules or noise, not text
SLIVER = 0.4  # of a text line's band: a thinner band is a rule or box edge, punctuation or noise
RULE_FILL = 0.97  # ink share of a row's span above which the row is a drawn rule, not glyphs
# vertical rules (drop_vertical_rules), in the page's tall glyph strokes: the STROKE_PCT-th
# percentile of its vertical ink runs
STROKE_PCT = 99
RULE_LEN = 3.0  # a vertical run at least this many strokes long is a drawn rule, not a glyph
RULE_WIDTH = 0.4  # ... where it is no wider than this share of a stroke (a display title's stem is)
# table rows (split_band), in text-line bands
SPLIT_BAND = 1.6  # a taller band may hold lines at different heights side by side
SPLIT_STROKES = 2.2  # ... if also taller than this many of its own tall glyph strokes (not a title)
SPLIT_GAP = 0.5  # a blank x-run at least this wide across a band may part two table cells
SAME_LINE = 0.6  # share of the shorter of two overlapping lines side by side that one line shares
ROW_GAP = 0.35  # bands closer than this may be the lines of one table row (see model.lines)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of True in a 1-D bool array."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def _runs_2d(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, start, end) arrays of the [start, end) runs of True along each row of a 2-D mask."""
    d = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(d == 1)  # row-major: each row's starts and ends alternate
    _, ends = np.nonzero(d == -1)
    return rows, starts, ends


def drop_vertical_rules(ink: np.ndarray) -> np.ndarray:
    """The ink mask without drawn vertical rules: runs down a column of pixels at least
    ``RULE_LEN`` tall glyph strokes long, in pieces no wider than ``RULE_WIDTH`` of one.

    A box frame or a table's cell rules ink every row of the block, so the blank rows between its
    lines vanish from the row profile and its lines merge into one band (and a rule in a gutter
    hides the gutter). The scale is the page's own tall glyph strokes (``_stroke``: ascender
    stems, capitals, brackets, 0.6-0.9 of a line band on synthetic pages; rules are a handful of
    runs among thousands). A glyph's run stays within its line, at most about 1.5 bands even in
    a title twice the body size, so 3 strokes (about 2-2.7 bands, less than a box around two
    lines) keeps every glyph of body text and headings; a display title's stem that long is
    thicker than ``RULE_WIDTH`` and stays too.
    """
    stroke = _stroke(ink)
    if stroke is None:
        return ink
    min_len = max(MIN_BAND, RULE_LEN * stroke)
    # only pixel columns with a run that long, found cheaply first in every k-th row
    k = max(1, int(min_len // 8))
    xs, top, bot = _runs_2d(ink[::k].T)
    cand = np.unique(xs[bot - top >= min_len // k])
    if not len(cand):
        return ink
    xs, top, bot = _runs_2d(ink[:, cand].T)
    long = bot - top >= min_len
    tall = np.zeros_like(ink)
    for x, t, b in zip(cand[xs[long]], top[long], bot[long], strict=True):
        tall[t:b, x] = True
    # thin pieces only: a solid block (an image, a filled box) is long in every pixel column too
    rows, starts, ends = _runs_2d(tall)
    thin = ends - starts <= max(1.0, RULE_WIDTH * stroke)
    out = ink.copy()
    for y, s, e in zip(rows[thin], starts[thin], ends[thin], strict=True):
        out[y, s:e] = False
    return out


def _stroke(ink: np.ndarray) -> float | None:
    """The length of a mask's tall glyph strokes: the ``STROKE_PCT``th percentile of its vertical
    ink runs (in every 4th pixel column: as telling as all, a quarter of the work); None with too
    few runs to know the type size."""
    _, top, bot = _runs_2d(ink[:, ::4].T)
    return float(np.percentile(bot - top, STROKE_PCT)) if len(top) >= 100 else None


def line_bands(ink: np.ndarray) -> list[tuple[int, int]]:
    """Text-line bands [top, bottom) of an ink mask, without drawn rules and thin slivers."""
    rows = ink.sum(axis=1)  # [H]
    row_mask = rows > max(1, int(0.002 * ink.shape[1]))  # a row with only speckle noise is empty
    # table rules and underlines: rows inked almost solidly along a long span are not text
    first = np.argmax(ink, axis=1)  # [H]
    span = ink.shape[1] - np.argmax(ink[:, ::-1], axis=1) - first  # [H]
    row_mask &= ~((span > 20) & (rows > RULE_FILL * span))
    bands = [(t, b) for t, b in runs(row_mask) if b - t >= MIN_BAND]
    if bands:  # slivers far thinner than the typical line are rule/box edges or noise
        typical = float(np.median([b - t for t, b in bands]))
        thin = [b - t < SLIVER * typical for t, b in bands]
        if any(thin):
            # but not a band as tall as the tall glyph strokes: where merged table rows are half
            # the bands, the median is several lines tall and the real lines would go as slivers
            stroke = _stroke(ink) or float("inf")
            bands = [(t, b) for (t, b), th in zip(bands, thin, strict=True) if not th or b - t >= stroke]
    return bands


def columns(ink: np.ndarray) -> list[tuple[int, int]]:
    """[left, right) text columns: split at interior gaps blank on every row, >= 3% of the width,
    between pieces at least a fifth of the width wide (not bullets or a hanging word).

    Without the split, two columns' lines that do not line up merge into bands twice as tall and
    the page reads as half its characters.
    """
    w = ink.shape[1]
    inked = runs(ink.any(axis=0))  # [W] -> inked column runs
    if not inked:
        return []
    cuts = [inked[0][0]]
    for (_, e0), (s1, _) in zip(inked, inked[1:], strict=False):
        if s1 - e0 >= 0.03 * w:
            cuts += [e0, s1]
    cuts.append(inked[-1][1])
    pieces = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts), 2)]
    out = [pieces[0]]
    for left, right in pieces[1:]:  # merge a narrow piece into its neighbour
        if right - left < 0.2 * w or out[-1][1] - out[-1][0] < 0.2 * w:
            out[-1] = (out[-1][0], right)
        else:
            out.append((left, right))
    return out


def regions(ink: np.ndarray, max_crossing: float = 0.1) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """(top, bottom, columns) blocks of a page in reading order.

    Usually one block with ``columns(ink)``. When those find one column but a gutter is blank on
    all but a few rows (a title or a full-width line over two columns: at most ``max_crossing`` of
    the inked rows cross it), the lines that cross it become full-width blocks and the rows
    between them are split into columns each on their own.
    """
    h, w = ink.shape
    cols = columns(ink)
    inked_rows = int(ink.any(axis=1).sum())
    if len(cols) != 1 or inked_rows == 0:
        return [(0, h, cols)] if cols else []
    counts = ink.sum(axis=0)  # [W]: inked rows at each x
    low = counts <= max_crossing * inked_rows  # x crossed by few rows
    left, right = cols[0]
    gutters = [
        (s, e)
        for s, e in runs(low[left:right])
        if e - s >= 0.03 * w and s >= 0.2 * w and (right - left) - e >= 0.2 * w
    ]
    if not gutters:
        return [(0, h, cols)]
    crossing = np.zeros(h, dtype=bool)
    for s, e in gutters:
        # the gutter's emptiest x only: lines of a column may end or start inside its edges
        g = counts[left + s : left + e]
        core = np.flatnonzero(g <= g.min() + 0.005 * inked_rows) + left + s
        crossing |= ink[:, core].any(axis=1)
    # whole lines cross, not single rows: a page line band that runs across most of a gutter (a
    # column's line that ends inside its edge does not)
    spans = [
        (t, b)
        for t, b in line_bands(ink)
        if crossing[t:b].any()
        and any(ink[t:b, left + s : left + e].any(axis=0).mean() >= 0.6 for s, e in gutters)
    ]
    if not spans or sum(b - t for t, b in spans) > max_crossing * 2 * inked_rows:
        return [(0, h, cols)]
    out, y = [], 0
    for t, b in spans + [(h, h)]:
        if t > y:
            sub = columns(ink[y:t])
            if sub:
                out.append((y, t, sub))
        if b > t:
            out.append((t, b, [(left, right)]))
        y = max(y, b)
    return out


def split_band(ink: np.ndarray, line: float) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """(left, right, line bands [top, bottom)) pieces of a band's ink side by side, left to right:
    its cells where it is more than ``SPLIT_BAND`` text lines (``line`` rows) tall and holds lines
    at different heights side by side, else the whole band as its one piece.

    A table row whose cells wrap to different line counts (one line centred beside two) has no
    blank row across it, so the row profile makes it one tall band showing several lines at once.
    The band is cut at x-runs blank on all its rows and at least ``SPLIT_GAP`` lines wide (about
    0.6 em: wider than a word space of proportional type, narrower than a cell gutter), then
    neighbouring pieces are joined back while their lines line up (``_line_up``): words of one
    line, the halves of a monospace line, a quote mark, the words of a large heading go back
    together; cells whose lines sit half a line pitch apart or more stay apart. Pieces are read
    left to right, each top to bottom, as a PDF text layer reads a table row.
    """
    h, w = ink.shape
    whole = [(0, w, [(0, h)])]
    pieces = _pieces(ink, SPLIT_GAP * line) if h > SPLIT_BAND * line else []
    if len(pieces) < 2 or not _holds_lines(ink):
        return whole

    def lines(left: int, right: int) -> list[tuple[int, int]]:  # the dots of a ':' are no line
        return [(t, b) for t, b in line_bands(ink[:, left:right]) if b - t >= SLIVER * line]

    groups: list[tuple[int, int]] = []
    for left, right in pieces:
        if groups and _line_up(lines(*groups[-1]), lines(left, right), lines(groups[-1][0], right), line):
            groups[-1] = (groups[-1][0], right)
        else:
            groups.append((left, right))
    if len(groups) < 2:
        return whole
    return [(left, right, lines(left, right)) for left, right in groups]


def _holds_lines(ink: np.ndarray) -> bool:
    """Whether a band is tall for its own type: more than ``SPLIT_STROKES`` of its tall glyph
    strokes. A title in large type is tall next to the body's lines, not next to its own strokes
    (one line is 1.1-1.6 strokes); two lines of body text at the tightest leading are about 2.7."""
    _, top, bot = _runs_2d(ink.T)
    return len(top) > 0 and ink.shape[0] > SPLIT_STROKES * np.percentile(bot - top, STROKE_PCT)


def _line_up(
    a: list[tuple[int, int]], b: list[tuple[int, int]], joined: list[tuple[int, int]], line: float
) -> bool:
    """Whether two neighbouring pieces' line bands ``a`` and ``b`` are the same lines, by the line
    bands of the two ``joined``: each joined line holds at most one line of each (else a line of
    one bridges the gap between two lines of the other); where it holds one of each, the two share
    at least ``SAME_LINE`` of the shorter one's rows (words of one line share most, cells half a
    line pitch apart less than half); and a line of one does not sit alone in a gap between two
    lines of the other less than a ``line`` tall (a short cell's one line centred between two lines
    of its neighbour, touching neither; a list's item text beside its numbers is no such line: the
    gap between two numbers holds whole lines)."""

    def within(lines: list[tuple[int, int]], top: int, bot: int) -> list[tuple[int, int]]:
        return [(t, b) for t, b in lines if t < bot and top < b]

    for top, bot in joined:
        in_a, in_b = within(a, top, bot), within(b, top, bot)
        if len(in_a) > 1 or len(in_b) > 1:
            return False
        if in_a and in_b:
            (ta, ba), (tb, bb) = in_a[0], in_b[0]
            if min(ba, bb) - max(ta, tb) < SAME_LINE * min(ba - ta, bb - tb):
                return False
    return not any(
        _squeezed(t, b, other, line)
        for lines, other in ((a, b), (b, a))
        for t, b in lines
        if not within(other, t, b)
    )


def _squeezed(top: int, bot: int, other: list[tuple[int, int]], line: float) -> bool:
    """Whether rows [top, bot) lie in a gap between two of ``other``'s lines less than ``line`` tall."""
    above = [b for t, b in other if b <= top]
    below = [t for t, b in other if t >= bot]
    return bool(above and below) and min(below) - max(above) < line


def _pieces(ink: np.ndarray, min_gap: float) -> list[tuple[int, int]]:
    """[left, right) inked pieces of a band, split at x-runs blank on all its rows >= ``min_gap``."""
    out: list[tuple[int, int]] = []
    for s, e in runs(ink.any(axis=0)):
        if out and s - out[-1][1] < min_gap:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out
