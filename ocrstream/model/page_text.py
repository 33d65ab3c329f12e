"""A page's output from its read lines: plain text, markdown or grounded blocks, per prompt.

A line-strip model reads each text line alone; this module puts the page back together in the
official output formats, from the lines' geometry (``ocrstream.model.lines.TextLine``):

* ``free_ocr`` (and prompts without grounding): one text line per output line, reading order;
* ``markdown``: blocks in the official grounded layout, ``<|ref|>label<|/ref|><|det|>[[x1, y1,
  x2, y2]]<|/det|>`` then the block's markdown, boxes on the 0-999 grid of the page. A block is a
  run of lines of one column without a blank line between them; a heading line becomes
  ``## ...`` (label ``title``); prose whose lines fill the column joins into one paragraph, other
  blocks (code, tables, lists, addresses) keep their line breaks;
* ``grounding`` / ``ocr``: one grounded block per line, the line's text as its content.

``ocrstream.model.grounding.to_markdown`` turns the grounded text into clean markdown and boxes.
"""

from __future__ import annotations

from collections.abc import Sequence

from .grounding import GRID
from .lines import TextLine
from .tokenizer import is_grounding_prompt

PARA_GAP = 0.8  # blank space above a line, in typical bands, that starts a new block
FULL_LINE = 0.8  # a prose line reaches this share of its block's right edge
BULLETS = ("-", "*", "\u2022")


def _norm_box(box: Sequence[float], size: tuple[int, int]) -> list[int]:
    w, h = size
    x1, y1, x2, y2 = box
    return [
        max(0, min(GRID, int(round(x1 / w * GRID)))),
        max(0, min(GRID, int(round(y1 / h * GRID)))),
        max(0, min(GRID, int(round(x2 / w * GRID)))),
        max(0, min(GRID, int(round(y2 / h * GRID)))),
    ]


def _tag(label: str, boxes: Sequence[Sequence[int]]) -> str:
    inner = ", ".join(f"[{b[0]}, {b[1]}, {b[2]}, {b[3]}]" for b in boxes)
    return f"<|ref|>{label}<|/ref|><|det|>[{inner}]<|/det|>"


def blocks(lines: Sequence[TextLine]) -> list[list[int]]:
    """Indices of ``lines`` grouped into blocks (see module doc)."""
    out: list[list[int]] = []
    for i, ln in enumerate(lines):
        prev = lines[i - 1] if i else None
        new = (
            prev is None
            or ln.column != prev.column
            or ln.gap_before > PARA_GAP
            or ln.heading != prev.heading
            or ln.heading
        )
        if new:
            out.append([i])
        else:
            out[-1].append(i)
    return out


def _join_block(
    idx: list[int], lines: Sequence[TextLine], texts: Sequence[str], column: tuple[float, float]
) -> str:
    """A block's text: prose (every line but the last spans most of its column) joined into one
    paragraph; anything else keeps its line breaks."""
    parts = [texts[i].strip() for i in idx if texts[i].strip()]
    if len(parts) <= 1:
        return parts[0] if parts else ""
    left, right = column
    span = max(1.0, right - left)
    prose = all((lines[i].box[2] - left) >= FULL_LINE * span for i in idx[:-1]) and not any(
        texts[i].lstrip().startswith(BULLETS) for i in idx[1:]
    )
    return " ".join(parts) if prose else "\n".join(parts)


def page_text(
    lines: Sequence[TextLine], texts: Sequence[str], prompt: str, image_size: tuple[int, int]
) -> str:
    """The page's output for ``prompt`` from its lines and their texts (same order)."""
    if len(lines) != len(texts):
        raise ValueError(f"{len(lines)} lines but {len(texts)} texts")
    if not is_grounding_prompt(prompt):
        return "\n".join(t.strip() for t in texts if t.strip())
    if prompt in ("grounding", "ocr") or "OCR this image" in prompt:
        return "\n".join(
            f"{_tag(t.strip(), [_norm_box(ln.box, image_size)])}"
            for ln, t in zip(lines, texts, strict=True)
            if t.strip()
        )
    columns: dict[int, tuple[float, float]] = {}
    for ln in lines:
        lo, hi = columns.get(ln.column, (ln.box[0], ln.box[2]))
        columns[ln.column] = (min(lo, ln.box[0]), max(hi, ln.box[2]))
    out = []
    for idx in blocks(lines):
        body = _join_block(idx, lines, texts, columns[lines[idx[0]].column])
        if not body:
            continue
        x1 = min(lines[i].box[0] for i in idx)
        y1 = min(lines[i].box[1] for i in idx)
        x2 = max(lines[i].box[2] for i in idx)
        y2 = max(lines[i].box[3] for i in idx)
        heading = lines[idx[0]].heading
        label = "title" if heading else "text"
        content = f"## {body}" if heading else body
        out.append(f"{_tag(label, [_norm_box((x1, y1, x2, y2), image_size)])}\n{content}\n")
    return "\n".join(out)
