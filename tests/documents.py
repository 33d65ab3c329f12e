"""Documents made on the fly for tests (and bench/): PDFs with known text (reportlab), multi-page
TIFFs, an empty PDF, random words, held-out text segments of one context page."""

from __future__ import annotations

import io
import random
import string

import pypdfium2 as pdfium
from PIL import Image
from reportlab.lib.pagesizes import A6
from reportlab.pdfgen import canvas


def random_words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8))) for _ in range(n))


def make_pdf(pages: list[str], encrypt: str | None = None, red_box: bool = False) -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A6, encrypt=encrypt)
    for text in pages:
        if red_box:
            c.setFillColorRGB(1, 0, 0)
            c.rect(10, 10, 60, 60, fill=1, stroke=0)
            c.setFillColorRGB(0, 0, 0)
        c.setFont("Helvetica", 12)
        c.drawString(20, 250, text)
        c.showPage()
    c.save()
    return buf.getvalue()


def empty_pdf() -> bytes:
    buf = io.BytesIO()
    pdfium.PdfDocument.new().save(buf)
    return buf.getvalue()


def make_tiff(n: int, size=(120, 80)) -> bytes:
    frames = [Image.new("RGB", size, (40 * i % 255, 100, 200)) for i in range(n)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def heldout_segments(
    n: int, size: int, seed: int, words: tuple[int, int] = (15, 45), font_px: int | None = None
) -> list[str]:
    """Test-split paragraphs cut to what one ``size``-px context page holds (the page's own drawn
    text), ``words`` long (min, max) before the cut; ``font_px`` as the context store renders."""
    from ocrstream.compression.render import PageRenderer
    from ocrstream.data.corpus import load_corpus

    rng = random.Random(seed)
    paras = load_corpus()["test"]
    r = PageRenderer(size, font_px=font_px)
    out = []
    while len(out) < n:
        text = rng.choice(paras).text.split()
        start = rng.randrange(max(1, len(text) - 10))
        out.append(r.render(" ".join(text[start : start + rng.randint(*words)]))[0].text)
    return out
