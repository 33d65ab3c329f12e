"""The one rasterizer core (``ocrstream.raster``): limits from config, page images fitted the same
way for documents and for the context API's rendered pages."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ocrstream.config import RasterizerConfig
from ocrstream.errors import OversizedDocument
from ocrstream.raster import Limits, fit_image, png_bytes, rasterize


def test_limits_from_config(rng):
    cfg = RasterizerConfig(
        dpi=rng.randint(50, 300),
        max_pages=rng.randint(1, 900),
        max_bytes=rng.randint(1, 10**9),
        max_page_pixels=rng.randint(1, 10**8),
        max_side=rng.randint(64, 4096),
    )
    lim = Limits.from_config(cfg)
    assert (lim.dpi, lim.max_pages, lim.max_bytes, lim.max_page_pixels, lim.max_side) == (
        cfg.dpi,
        cfg.max_pages,
        cfg.max_bytes,
        cfg.max_page_pixels,
        cfg.max_side,
    )
    assert Limits.from_config(RasterizerConfig()) == Limits()  # one set of defaults


def test_fit_image_is_what_an_image_document_becomes(rng):
    side = rng.randint(64, 200)
    w, h = rng.randint(side + 1, 3 * side), rng.randint(8, 3 * side)
    img = Image.new("L", (w, h), rng.randint(0, 255))
    lim = Limits(max_side=side)
    fitted = fit_image(img, lim)
    assert fitted.mode == "RGB" and max(fitted.size) <= side
    _, pages = rasterize(png_bytes(img), lim)
    (page,) = list(pages)
    assert page.image.tobytes() == fitted.tobytes()  # the rasterizer fits image pages the same way
    small = Image.new("RGB", (side // 2, side // 2), (1, 2, 3))
    assert fit_image(small, lim).tobytes() == small.tobytes()  # within limits: unchanged
    assert Image.open(io.BytesIO(png_bytes(small))).convert("RGB").tobytes() == small.tobytes()
    with pytest.raises(OversizedDocument, match="context page is"):
        fit_image(img, Limits(max_page_pixels=w * h - 1), "context page")
