"""Grounding tags -> boxes in page pixels, and the official markdown post-processing.

Follows the official ``run_dpsk_ocr_image.py`` / ``run_dpsk_ocr_pdf.py`` (``re_match``,
``extract_coordinates_and_label``, ``draw_bounding_boxes``, the output clean-up) and HF
``infer()``: blocks look like ``<|ref|>LABEL<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>``
followed by their content; coordinates are on a 0-999 grid of the original image and map to
pixels as int(x / 999 * width). Boxes are parsed with a regex, never ``eval``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

BLOCK_RE = re.compile(r"(<\|ref\|>(.*?)<\|/ref\|><\|det\|>(.*?)<\|/det\|>)", re.DOTALL)
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
BOX_RE = re.compile(r"\[" + ",".join([_NUM] * 4) + r"\]")
EOS_TEXT = "<｜end▁of▁sentence｜>"
PAGE_SPLIT = "\n<--- Page Split --->\n"
GRID = 999  # the model's coordinate grid is 0..999


@dataclass
class GroundedBlock:
    label: str
    boxes: list[tuple[int, int, int, int]]  # page pixels (x1, y1, x2, y2)
    boxes_norm: list[tuple[float, float, float, float]]  # as emitted, 0..999
    content: str  # text after the tags up to the next block
    span: tuple[int, int] = (0, 0)  # character span of the tag pair in the raw text

    def to_dict(self) -> dict:
        return {"label": self.label, "boxes": [list(b) for b in self.boxes], "content": self.content}


def parse_boxes(
    det: str, width: int, height: int
) -> tuple[list[tuple[int, int, int, int]], list[tuple[float, ...]]]:
    """All [x1, y1, x2, y2] groups of a det payload -> (pixel boxes, raw boxes). Malformed groups are skipped."""
    px, raw = [], []
    for m in BOX_RE.finditer(det):
        x1, y1, x2, y2 = (float(v) for v in m.groups())
        raw.append((x1, y1, x2, y2))
        px.append(
            (int(x1 / GRID * width), int(y1 / GRID * height), int(x2 / GRID * width), int(y2 / GRID * height))
        )
    return px, raw


def parse_grounding(text: str, width: int, height: int) -> list[GroundedBlock]:
    """Every grounded block of a model output, with its boxes scaled to a width x height page."""
    if width <= 0 or height <= 0:
        raise ValueError(f"page size must be positive, got {width}x{height}")
    matches = list(BLOCK_RE.finditer(text))
    blocks = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        boxes, raw = parse_boxes(m.group(3), width, height)
        blocks.append(GroundedBlock(m.group(2), boxes, raw, text[m.end() : end].strip("\n"), m.span(1)))
    return blocks


@dataclass
class Markdown:
    text: str
    blocks: list[GroundedBlock] = field(default_factory=list)
    image_files: list[str] = field(default_factory=list)  # relative paths written (or referenced)


def clean_text(text: str, collapse_newlines: bool = True) -> str:
    """Output clean-up of the official scripts (after the tag pairs were handled)."""
    if text.endswith(EOS_TEXT):
        text = text[: -len(EOS_TEXT)]
    text = text.replace("\\coloneqq", ":=").replace("\\eqqcolon", "=:")
    if collapse_newlines:  # the PDF script's clean-up
        text = text.replace("\n\n\n\n", "\n\n").replace("\n\n\n", "\n\n")
    return text.strip()


def to_markdown(
    text: str,
    width: int,
    height: int,
    page_image: Image.Image | None = None,
    out_dir: str | Path | None = None,
    image_prefix: str = "images",
    start_index: int = 0,
) -> Markdown:
    """Official post-processing: `image` blocks become ``![](images/{i}.jpg)`` (cropped from
    ``page_image`` into ``out_dir/images/`` when both are given), all other tag pairs are removed."""
    blocks = parse_grounding(text, width, height)
    files: list[str] = []
    out = []
    pos = 0
    idx = start_index
    for b in blocks:
        out.append(text[pos : b.span[0]])
        if b.label == "image":
            rel = f"{image_prefix}/{idx}.jpg"
            files.append(rel)
            out.append(f"![]({rel})\n")
            if page_image is not None and out_dir is not None and b.boxes:
                _save_crop(page_image, b.boxes[0], Path(out_dir) / rel)
            idx += 1
        pos = b.span[1]
    out.append(text[pos:])
    return Markdown(clean_text("".join(out)), blocks, files)


def _save_crop(page: Image.Image, box: tuple[int, int, int, int], path: Path) -> None:
    x1, y1, x2, y2 = box
    x1, x2 = sorted((max(0, x1), min(page.width, x2)))
    y1, y2 = sorted((max(0, y1), min(page.height, y2)))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    page.crop((x1, y1, x2, y2)).convert("RGB").save(path, "JPEG")


def join_pages(pages: list[str]) -> str:
    return PAGE_SPLIT.join(pages)
