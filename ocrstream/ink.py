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
