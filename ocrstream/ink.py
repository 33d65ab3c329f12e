"""Page ink analysis: text columns and, per column, text-line bands of a page's ink mask.

One analysis behind the density estimate (``ocrstream.compression.density``) and the model's line
finder (``ocrstream.model.lines``, the legacy ``reflow``), so the cost a page is predicted to have
and the strips the model reads come from the same bands. Ink = pixels darker than the page
background (its 90th percentile grey) by ``INK_MARGIN``.
"""

from __future__ import annotations

import numpy as np

INK_MARGIN = 48  # grey levels below the background that count as ink
MIN_BAND = 3  # rows: thinner bands are rules or noise, not text
RULE_FILL = 0.97  # ink share of a row's span above which the row is a drawn rule, not glyphs


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of True in a 1-D bool array."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


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
        bands = [(t, b) for t, b in bands if b - t >= 0.4 * typical]
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
