"""Synthetic born-digital pages (PDF, made with reportlab) for evaluating whole-page reading.

A page has a title, headings, paragraphs, bullet lists and sometimes two columns, set in one
TrueType face at 9-13 pt on A4, like a generated report. The text comes from a corpus split the
model never trained on; the ground truth is every drawn line, in reading order. The page is
rasterised by the pipeline's own rasterizer and read through the page -> lines path, so the
number measures segmentation, strip geometry and reading together.

Only TrueType faces are usable (reportlab does not embed CFF-outline OpenType).
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ocrstream.data.charset import CHARSET, normalize
from ocrstream.data.corpus import Paragraph
from ocrstream.data.fonts import FontFace, coverage
from ocrstream.data.render import seed_for


@dataclass
class SyntheticPage:
    pdf: bytes
    lines: list[str]  # every drawn line, reading order
    font: str
    font_pt: float

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def truetype(fonts: Sequence[FontFace]) -> list[FontFace]:
    return [f for f in fonts if f.path.suffix.lower() == ".ttf"]


class PageMaker:
    def __init__(
        self, paragraphs: Sequence[Paragraph], fonts: Sequence[FontFace], split: str, seed: int = 0
    ) -> None:
        self.paragraphs = list(paragraphs)
        self.fonts = truetype(fonts)
        if not self.fonts:
            raise ValueError("no TrueType faces to set synthetic pages in")
        self.split = split
        self.seed = seed

    def page(self, index: int) -> SyntheticPage:
        rng = random.Random(seed_for(self.seed, f"pages:{self.split}", index))
        return self.sample(rng)

    def sample(self, rng: random.Random) -> SyntheticPage:
        from reportlab import rl_config
        from reportlab.lib.pagesizes import A4
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont
        from reportlab.pdfgen import canvas

        rl_config.invariant = 1
        face = rng.choice(self.fonts)
        covered = coverage(face.path)
        name = f"f-{face.name}"
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(name, str(face.path)))
        pt = rng.uniform(9.0, 13.0)
        lead = pt * rng.uniform(1.2, 1.5)
        width, height = A4
        margin = rng.uniform(50, 80)
        columns = 2 if rng.random() < 0.2 else 1
        gutter = 20.0
        col_w = (width - 2 * margin - (columns - 1) * gutter) / columns
        buf = io.BytesIO()
        c = canvas.Canvas(buf, pagesize=A4, invariant=1)
        drawn: list[str] = []

        def clean(t: str) -> str:
            return "".join(ch for ch in t if ch in covered and ch in CHARSET)

        def wrap(words: list[str], size: float, w: float) -> list[str]:
            out, cur = [], ""
            for word in words:
                cand = f"{cur} {word}" if cur else word
                if pdfmetrics.stringWidth(cand, name, size) <= w:
                    cur = cand
                    continue
                if cur:
                    out.append(cur)
                cur = word
            if cur:
                out.append(cur)
            return out

        y = height - margin
        title = clean(" ".join(rng.choice(self.paragraphs).text.split()[: rng.randint(2, 6)]).strip(".,;:"))
        if title:
            tpt = pt * rng.uniform(1.5, 2.0)
            c.setFont(name, tpt)
            c.drawString(margin, y - tpt, title)
            drawn.append(title)
            y -= tpt * 2.0
        top = y
        for col in range(columns):
            x = margin + col * (col_w + gutter)
            y = top
            while y > margin + 3 * lead:
                kind = rng.choices(("para", "heading", "list"), (0.7, 0.12, 0.18))[0]
                words = clean(rng.choice(self.paragraphs).text).split()
                if not words:
                    continue
                if kind == "heading":
                    hpt = pt * rng.uniform(1.2, 1.45)
                    # a heading fits its column (one overflowing into the next column's text
                    # makes a page nobody could read back)
                    text = wrap(words[: rng.randint(2, 5)], hpt, col_w)[0].strip(".,;:")
                    c.setFont(name, hpt)
                    c.drawString(x, y - hpt, text)
                    drawn.append(text)
                    y -= hpt * 1.8
                    continue
                c.setFont(name, pt)
                if kind == "list":
                    items = [words[i : i + rng.randint(3, 9)] for i in range(0, min(len(words), 30), 9)]
                    for item in items:
                        for k, ln in enumerate(wrap(item, pt, col_w - 14)):
                            if y < margin + lead:
                                break
                            if k == 0:
                                c.drawString(x, y - pt, "-")
                                drawn.append(f"- {ln}")
                            else:
                                drawn.append(ln)
                            c.drawString(x + 14, y - pt, ln)
                            y -= lead
                else:
                    for ln in wrap(words, pt, col_w):
                        if y < margin + lead:
                            break
                        c.drawString(x, y - pt, ln)
                        drawn.append(ln)
                        y -= lead
                y -= lead * rng.uniform(0.4, 0.9)
        c.showPage()
        c.save()
        return SyntheticPage(buf.getvalue(), [ln for ln in drawn if normalize(ln)], face.name, pt)
