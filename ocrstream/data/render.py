"""Synthetic page renderer: text from the offline corpora drawn with PIL, with ground truth.

One rendered page is a square view (the model's base view or one Gundam tile). Layouts: free words,
paragraphs, headings, bullet lists, simple tables and two columns, with varied fonts, sizes, weights
and line spacing, then light degradation (grey levels, pixel noise, blur, JPEG artifacts).
Ground truth is both plain text (the visible text, one line per rendered line) and markdown
(reflowed paragraphs, ``#`` headings, ``-`` lists, HTML tables as in DeepSeek-OCR's output).

Everything is driven by a ``random.Random`` seeded from (seed, split, index), so page ``i`` of a
split is the same on every machine with the same fonts and corpus.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ocrstream.data.corpus import Paragraph
from ocrstream.data.fonts import FontFace, load_font

# Curriculum levels: (min font px, max font px) at a 256-px view, and what is drawn.
#   0: 1-3 words, large type        1: a few words on up to 3 lines
#   2: a prose snippet, medium type  3: full view: prose, headings, lists, tables, columns
LEVELS = (0, 1, 2, 3)
_FONT_PX = {0: (30, 44), 1: (22, 32), 2: (17, 24), 3: (14, 20)}


@dataclass
class Page:
    image: Image.Image  # RGB, size x size
    text: str  # plain text ground truth
    markdown: str  # markdown ground truth
    font: str
    level: int
    source: str
    meta: dict = field(default_factory=dict)
    # every drawn string: (x, y, text, font) - where the text is, for per-vision-token labels
    spans: list = field(default_factory=list)


class _RecordingDraw:
    """ImageDraw proxy that remembers where each string was drawn."""

    def __init__(self, draw: ImageDraw.ImageDraw) -> None:
        self._draw = draw
        self.spans: list = []

    def text(self, xy, text, font, fill) -> None:  # noqa: ANN001 - PIL signature subset
        self._draw.text(xy, text, font=font, fill=fill)
        self.spans.append((float(xy[0]), float(xy[1]), text, font))

    def line(self, *args, **kw) -> None:  # noqa: ANN002, ANN003
        self._draw.line(*args, **kw)


@dataclass
class _Block:
    kind: str  # heading | para | list | table | words
    lines: list[str]  # rendered lines (plain text)
    markdown: str


def seed_for(seed: int, split: str, index: int) -> int:
    h = hashlib.sha256(f"{seed}:{split}:{index}".encode()).digest()
    return int.from_bytes(h[:8], "big")


class PageGenerator:
    """Renders pages from one corpus split in a given set of fonts."""

    def __init__(
        self,
        paragraphs: Sequence[Paragraph],
        fonts: Sequence[FontFace],
        size: int = 256,
        split: str = "train",
        seed: int = 0,
    ) -> None:
        if not paragraphs:
            raise ValueError(f"no paragraphs for split {split!r}")
        if not fonts:
            raise ValueError("no fonts")
        self.paragraphs = list(paragraphs)
        self.fonts = list(fonts)
        self.size = int(size)
        self.split = split
        self.seed = seed

    # ---- public ------------------------------------------------------------------------------
    def page(self, index: int, level: int = 3, *, degrade: bool = True) -> Page:
        """Deterministic page ``index`` of this split at a curriculum level."""
        rng = random.Random(seed_for(self.seed, f"{self.split}:{level}", index))
        return self.sample(rng, level, degrade=degrade)

    def sample(self, rng: random.Random, level: int, *, degrade: bool = True) -> Page:
        if level not in LEVELS:
            raise ValueError(f"level {level} not in {LEVELS}")
        for _ in range(20):
            page = self._try(rng, level, degrade)
            if page.text.strip():
                return page
        raise RuntimeError(f"could not render a non-empty page at level {level}")

    # ---- layout ------------------------------------------------------------------------------
    def _try(self, rng: random.Random, level: int, degrade: bool) -> Page:
        s = self.size
        scale = s / 256.0
        face = rng.choice(self.fonts)
        lo, hi = _FONT_PX[level]
        px = max(8, int(round(rng.uniform(lo, hi) * scale)))
        font = load_font(face.path, px)
        spacing = rng.uniform(1.15, 1.6)
        line_h = int(round(px * spacing))
        bg = rng.randint(215, 255)
        fg = rng.randint(0, 80)
        img = Image.new("L", (s, s), bg)
        draw = _RecordingDraw(ImageDraw.Draw(img))
        margin = int(rng.uniform(0.03, 0.1) * s)
        para = rng.choice(self.paragraphs)
        source = para.source

        if level <= 1:
            words = self._words(rng, 1 + rng.randrange(3) if level == 0 else 3 + rng.randrange(8))
            x0 = margin + rng.randrange(max(1, s // 6))
            y0 = margin + rng.randrange(max(1, s // 3))
            lines = self._wrap(words, font, s - margin - x0)
            maxl = 1 if level == 0 and rng.random() < 0.7 else 3
            lines = lines[:maxl]
            blocks_drawn = self._draw_lines(draw, lines, font, x0, y0, line_h, s - margin, fg)
            text = "\n".join(blocks_drawn)
            md = " ".join(blocks_drawn)
        elif level == 2:
            words = para.text.split()
            start = rng.randrange(max(1, len(words) - 4)) if rng.random() < 0.5 else 0
            n = 4 + rng.randrange(16)
            x0 = margin
            y0 = margin + rng.randrange(max(1, s // 4))
            lines = self._wrap(words[start : start + n], font, s - 2 * margin)
            drawn = self._draw_lines(draw, lines, font, x0, y0, line_h, s - margin, fg)
            text = "\n".join(drawn)
            md = " ".join(drawn)
        else:
            text, md = self._full(rng, draw, para, face, px, line_h, margin, fg)

        if degrade:
            img = self._degrade(rng, img)
        return Page(img.convert("RGB"), text, md, face.name, level, source, {"font_px": px}, draw.spans)

    def _full(self, rng, draw, para, face, px, line_h, margin, fg) -> tuple[str, str]:
        s = self.size
        columns = 2 if rng.random() < 0.15 else 1
        gutter = int(0.05 * s)
        col_w = (s - 2 * margin - (columns - 1) * gutter) // columns
        y_top = margin + rng.randrange(max(1, s // 12))
        plain: list[str] = []
        mds: list[str] = []
        pool = [para, *(rng.choice(self.paragraphs) for _ in range(3))]
        for c in range(columns):
            x0 = margin + c * (col_w + gutter)
            y = y_top
            while y + line_h <= s - margin and pool:
                kind = rng.choices(["para", "heading", "list", "table"], [0.6, 0.15, 0.15, 0.1])[0]
                if kind == "heading" and plain and plain[-1].startswith("#"):
                    kind = "para"
                if kind == "table" and columns > 1:
                    kind = "para"
                p = pool.pop(0)
                block, y = self._block(rng, draw, kind, p, face, px, line_h, x0, y, col_w, s - margin, fg)
                if block is None:
                    break
                plain.extend(block.lines)
                mds.append(block.markdown)
                y += int(line_h * rng.uniform(0.3, 0.8))
        return "\n".join(plain), "\n\n".join(mds)

    def _block(self, rng, draw, kind, p, face, px, line_h, x0, y, width, y_max, fg):
        words = p.text.split()
        if kind == "heading":
            hface = face
            hpx = int(px * rng.uniform(1.15, 1.5))
            font = load_font(hface.path, hpx)
            n = 2 + rng.randrange(5)
            hw = [w.strip(".,;:") for w in words[:n]]
            lines = self._wrap(hw, font, width)[:2]
            drawn = self._draw_lines(draw, lines, font, x0, y, int(hpx * 1.3), y_max, fg)
            if not drawn:
                return None, y
            return _Block("heading", drawn, "## " + " ".join(drawn)), y + len(drawn) * int(hpx * 1.3)
        font = load_font(face.path, px)
        if kind == "list":
            items = []
            i = 0
            while i < len(words) and len(items) < 4:
                n = 2 + rng.randrange(6)
                items.append(words[i : i + n])
                i += n
            drawn_all: list[str] = []
            md_items = []
            for it in items:
                lines = self._wrap(["-", *it], font, width)
                drawn = self._draw_lines(draw, lines, font, x0, y, line_h, y_max, fg)
                if not drawn:
                    break
                y += len(drawn) * line_h
                drawn_all.extend(drawn)
                md_items.append(" ".join(drawn))
                if len(drawn) < len(lines):
                    break
            if not drawn_all:
                return None, y
            return _Block("list", drawn_all, "\n".join(md_items)), y
        if kind == "table":
            ncol = 2 + rng.randrange(2)
            nrow = 2 + rng.randrange(3)
            cells = [w.strip(".,;:()") or "x" for w in words]
            cell_w = width // ncol
            rows_plain, rows_md = [], []
            wi = 0
            for _ in range(nrow):
                if y + line_h > y_max:
                    break
                row = []
                for c in range(ncol):
                    cell = cells[wi % len(cells)]
                    wi += 1
                    while font.getlength(cell) > cell_w - 6 and len(cell) > 1:
                        cell = cell[:-1]
                    draw.text((x0 + c * cell_w + 3, y), cell, font=font, fill=fg)
                    row.append(cell)
                draw.line((x0, y + line_h - 2, x0 + ncol * cell_w, y + line_h - 2), fill=fg, width=1)
                rows_plain.append(" ".join(row))
                rows_md.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
                y += line_h
            if not rows_plain:
                return None, y
            return _Block("table", rows_plain, "<table>" + "".join(rows_md) + "</table>"), y
        lines = self._wrap(words, font, width)
        drawn = self._draw_lines(draw, lines, font, x0, y, line_h, y_max, fg)
        if not drawn:
            return None, y
        return _Block("para", drawn, " ".join(drawn)), y + len(drawn) * line_h

    # ---- primitives --------------------------------------------------------------------------
    def _words(self, rng: random.Random, n: int) -> list[str]:
        out = []
        for _ in range(n):
            w = rng.choice(rng.choice(self.paragraphs).text.split())
            if rng.random() < 0.6:
                w = w.strip(".,;:!?\"'()") or w
            out.append(w)
        return out

    @staticmethod
    def _wrap(words: Sequence[str], font, width: int) -> list[str]:
        lines: list[str] = []
        cur = ""
        for w in words:
            cand = f"{cur} {w}" if cur else w
            if font.getlength(cand) <= width:
                cur = cand
                continue
            if cur:
                lines.append(cur)
            cur = w
            while font.getlength(cur) > width and len(cur) > 1:
                # a single word wider than the column: hard-break it
                k = len(cur)
                while k > 1 and font.getlength(cur[:k]) > width:
                    k -= 1
                lines.append(cur[:k])
                cur = cur[k:]
        if cur:
            lines.append(cur)
        return lines

    @staticmethod
    def _draw_lines(draw, lines, font, x0, y0, line_h, y_max, fg) -> list[str]:
        drawn = []
        y = y0
        for ln in lines:
            if y + line_h > y_max:
                break
            draw.text((x0, y), ln, font=font, fill=fg)
            drawn.append(ln)
            y += line_h
        return drawn

    def _degrade(self, rng: random.Random, img: Image.Image) -> Image.Image:
        if rng.random() < 0.3:
            img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 0.8)))
        sigma = rng.uniform(0, 6)
        if sigma > 0.5:
            arr = np.asarray(img, dtype=np.float32)
            noise = np.random.default_rng(rng.getrandbits(32)).normal(0, sigma, arr.shape)
            img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
        if rng.random() < 0.3:
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=rng.randint(40, 90))
            buf.seek(0)
            img = Image.open(buf).convert("L")
        return img
