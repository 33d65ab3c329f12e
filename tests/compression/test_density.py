"""Density estimates: the image estimate tracks the truth on rendered pages; text layers count exactly."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ocrstream.compression.density import estimate, estimate_from_image, pdf_text_chars


def test_image_estimate_within_factor_on_synthetic_pages(rng):
    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.fonts import train_fonts
    from ocrstream.data.render import PageGenerator

    size = rng.choice([256, 384, 512])
    gen = PageGenerator(load_corpus()["test"], train_fonts(), size, split="density", seed=rng.getrandbits(32))
    ratios = []
    for i in range(12):
        page = gen.page(i, (1, 2, 3)[i % 3])
        truth = len(" ".join(page.text.split()))
        est = estimate_from_image(page.image).chars
        ratios.append(est / truth)
        # about 1 page in 7,000 (one short line of x-height letters) misses by up to 3x; 80% are within 20%
        assert 1 / 2.5 < est / truth < 2.5, (rng.seed_value, size, i, truth, est)
    assert 0.8 < sorted(ratios)[len(ratios) // 2] < 1.25, (rng.seed_value, size, ratios)
    # dense pages estimate denser than sparse ones (what mode choice relies on)
    dense = [estimate_from_image(gen.page(100 + i, 3).image).chars for i in range(3)]
    sparse = [estimate_from_image(gen.page(200 + i, 1).image).chars for i in range(3)]
    assert min(dense) > max(sparse), (rng.seed_value, dense, sparse)


def test_blank_page_has_no_text():
    e = estimate_from_image(Image.new("RGB", (300, 200), (250, 250, 250)))
    assert e.chars == 0 and e.lines == 0


def test_text_layer_wins_and_pdf_chars_count(rng):
    import pypdfium2 as pdfium
    from reportlab.pdfgen import canvas

    words = " ".join("".join(rng.choices("abcdefgh", k=rng.randint(2, 7))) for _ in range(rng.randint(3, 12)))
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(40, 700, words)
    c.showPage()
    c.save()
    pdf = pdfium.PdfDocument(buf.getvalue())
    assert pdf_text_chars(pdf, 0) == len(words)
    e = estimate(Image.new("RGB", (64, 64), "white"), text_layer_chars=len(words))
    assert (e.source, e.chars) == ("text-layer", float(len(words)))


def test_errors_carry_values():
    with pytest.raises(ValueError, match=">= 0, got -3"):
        estimate(None, text_layer_chars=-3)
    with pytest.raises(ValueError, match="need a page image"):
        estimate(None, None)
