"""Synthetic technical-manual pages: what born-digital documentation prints besides prose.

``ocrstream.data.pages`` makes report-like pages (title, headings, paragraphs, lists). A manual
also has code words inline in a monospace face, typographic quotes, boxed code listings, ruled
tables whose cells wrap to different line counts (a one-line cell centred beside a two-line one),
and footnotes in smaller type. This generator sets those on A4 with reportlab, from held-out
corpus and code splits, and records every drawn line in reading order (a table row: the left
cell's lines, then the right cell's, as a PDF text layer has them). It measures the page -> lines
path on such layouts without touching a real document.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

from ocrstream.data.charset import CHARSET, normalize
from ocrstream.data.code import shell_line, smarten
from ocrstream.data.corpus import Paragraph
from ocrstream.data.fonts import FontFace, coverage
from ocrstream.data.pages import SyntheticPage, truetype
from ocrstream.data.render import seed_for


class DocPageMaker:
    """Pages from ``paragraphs`` (prose) and ``code_lines`` of one split, body faces ``fonts``."""

    def __init__(
        self,
        paragraphs: Sequence[Paragraph],
        code_lines: Sequence[Paragraph],
        fonts: Sequence[FontFace],
        split: str,
        seed: int = 0,
    ) -> None:
        faces = truetype(fonts)
        self.body = [f for f in faces if "Mono" not in f.name]
        self.mono = [f for f in faces if "Mono" in f.name]
        if not self.body or not self.mono:
            raise ValueError("need TrueType body and monospace faces")
        self.paragraphs = list(paragraphs)
        self.code = [p.text for p in code_lines] or ["x = 1"]
        self.split = split
        self.seed = seed

    def page(self, index: int) -> SyntheticPage:
        return self.sample(random.Random(seed_for(self.seed, f"docpages:{self.split}", index)))

    def sample(self, rng: random.Random) -> SyntheticPage:
        from reportlab import rl_config
        from reportlab.lib.pagesizes import A4
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.ttfonts import TTFont
        from reportlab.pdfgen import canvas

        rl_config.invariant = 1
        body, mono = rng.choice(self.body), rng.choice(self.mono)
        names = {}
        for face in (body, mono):
            names[face] = f"f-{face.name}"
            if names[face] not in pdfmetrics.getRegisteredFontNames():
                pdfmetrics.registerFont(TTFont(names[face], str(face.path)))
        fb, fm = names[body], names[mono]
        ok = coverage(body.path) & coverage(mono.path)
        pt = rng.uniform(9.0, 11.5)
        lead = pt * rng.uniform(1.2, 1.4)
        width, height = A4
        margin = rng.uniform(50, 70)
        text_w = width - 2 * margin
        buf = io.BytesIO()
        c = canvas.Canvas(buf, pagesize=A4, invariant=1)
        drawn: list[str] = []

        def clean(t: str) -> str:
            return "".join(ch for ch in t if ch in ok and ch in CHARSET)

        def prose(n: int) -> list[tuple[str, str]]:
            """(word, font) runs: corpus words, some code words in the monospace face."""
            words = clean(smarten(rng.choice(self.paragraphs).text) if rng.random() < 0.7 else "").split()
            words = words or clean(rng.choice(self.paragraphs).text).split()
            out = [(w, fb) for w in words[:n]]
            for _ in range(rng.randint(0, 3)):
                if out:
                    token = clean(rng.choice(shell_line(self.paragraphs, rng).lstrip("$# ").split(" ")))
                    if token:
                        out[rng.randrange(len(out))] = (token, fm)
            return out

        def wrap(runs: list[tuple[str, str]], size: float, w: float) -> list[list[tuple[str, str]]]:
            lines, cur, cur_w = [], [], 0.0
            space = pdfmetrics.stringWidth(" ", fb, size)
            for word, font in runs:
                ww = pdfmetrics.stringWidth(word, font, size)
                if cur and cur_w + space + ww > w:
                    lines.append(cur)
                    cur, cur_w = [], 0.0
                cur_w += (space if cur else 0.0) + ww
                cur.append((word, font))
            if cur:
                lines.append(cur)
            return lines

        def draw_line(runs: list[tuple[str, str]], x: float, y: float, size: float) -> None:
            space = pdfmetrics.stringWidth(" ", fb, size)
            for word, font in runs:
                c.setFont(font, size)
                c.drawString(x, y, word)
                x += pdfmetrics.stringWidth(word, font, size) + space
            drawn.append(" ".join(w for w, _ in runs))

        y = height - margin
        foot_pt = pt * rng.uniform(0.75, 0.85)
        n_foot = rng.randint(0, 3)
        floor = margin + n_foot * 2.4 * foot_pt * 1.2 + 2 * lead
        while y > floor + 4 * lead:
            kind = rng.choices(("para", "code", "table"), (0.5, 0.2, 0.3))[0]
            if kind == "para":
                for ln in wrap(prose(rng.randint(20, 70)), pt, text_w):
                    if y - lead < floor:
                        break
                    draw_line(ln, margin, y - pt, pt)
                    y -= lead
            elif kind == "code":  # a listing in a drawn frame
                n = rng.randint(2, 4)
                lines = [clean(rng.choice(self.code)) for _ in range(n)]
                lines = [t for t in lines if t and pdfmetrics.stringWidth(t, fm, pt) < text_w - 16]
                if not lines or y - (len(lines) + 1) * lead < floor:
                    continue
                box_h = len(lines) * lead + 0.8 * lead
                c.setLineWidth(rng.uniform(0.5, 1.2))
                c.rect(margin, y - box_h, text_w, box_h)
                for i, t in enumerate(lines):
                    c.setFont(fm, pt)
                    c.drawString(margin + 6, y - 0.4 * lead - pt - i * lead, t)
                    drawn.append(t)
                y -= box_h
            else:  # a ruled two-column table; the left cell is centred on its row
                left_w = text_w * rng.uniform(0.3, 0.4)
                ruled = rng.random() < 0.7
                c.setLineWidth(0.6)
                for _ in range(rng.randint(2, 5)):
                    key = clean(rng.choice(shell_line(self.paragraphs, rng).lstrip("$# ").split(" ")))
                    right = wrap(prose(rng.randint(4, 24)), pt, text_w - left_w - 12)
                    if not key or not right:
                        continue
                    row_h = len(right) * lead + 0.5 * lead
                    if y - row_h < floor or pdfmetrics.stringWidth(key, fm, pt) > left_w - 12:
                        break
                    if ruled:
                        c.rect(margin, y - row_h, left_w, row_h)
                        c.rect(margin + left_w, y - row_h, text_w - left_w, row_h)
                    mid = y - row_h / 2 - 0.35 * pt
                    c.setFont(fm, pt)
                    c.drawString(margin + 4, mid, key)
                    drawn.append(key)
                    for i, ln in enumerate(right):
                        draw_line(ln, margin + left_w + 6, y - 0.25 * lead - pt - i * lead, pt)
                    y -= row_h
            y -= lead * rng.uniform(0.6, 1.0)
        if n_foot:  # footnotes in smaller type under a short rule
            fy = margin + n_foot * 2.4 * foot_pt * 1.2
            c.setLineWidth(0.5)
            c.line(margin, fy + foot_pt, margin + text_w * 0.3, fy + foot_pt)
            for k in range(n_foot):
                runs = [(f"{k + 1}", fb)] + prose(rng.randint(8, 40))
                for ln in wrap(runs, foot_pt, text_w)[:2]:
                    draw_line(ln, margin, fy - foot_pt, foot_pt)
                    fy -= foot_pt * 1.2
        c.showPage()
        c.save()
        return SyntheticPage(buf.getvalue(), [ln for ln in drawn if normalize(ln)], body.name, pt)
