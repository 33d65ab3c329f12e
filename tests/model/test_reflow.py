"""Reflow: a page's text lines re-laid into small views, in reading order, nothing dropped."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ocrstream.ink import runs as _runs
from ocrstream.model.modes import get_mode
from ocrstream.model.reflow import BAND_PX, MARGIN, find_lines, reflow_views


def _bar_page(rng: random.Random, columns: int):
    """A page of 'words' drawn as black bars of random widths; returns it and the word widths in
    reading order (column by column, line by line), in page pixels."""
    w, h = 1000, 1300
    img = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(img)
    band = rng.randint(16, 30)
    gap = band  # word gap, wide enough to survive scaling
    col_w = (w - 120) // columns - 40
    order = []
    for c in range(columns):
        x0 = 60 + c * (col_w + 80)
        y = 60 + rng.randint(0, 40)
        for _ in range(rng.randint(4, 12)):
            x = x0
            while True:
                bw = rng.randint(band, 5 * band)
                if x + bw > x0 + col_w:
                    break
                d.rectangle((x, y, x + bw - 1, y + band - 1), fill=(0, 0, 0))
                order.append(bw)
                x += bw + gap
            y += int(band * rng.uniform(1.6, 2.2))
    return img, order, band


def _words_in_views(views, gap: int) -> list[int]:
    """Bar widths read back from the views: view by view, row band by row band, left to right."""
    out = []
    for v in views:
        ink = np.asarray(v.convert("L")) < 128
        for top, bot in _runs(ink.any(axis=1)):
            runs = _runs(ink[top:bot].any(axis=0))
            out += [e - s for s, e in runs]
    return out


@pytest.mark.parametrize("columns", [1, 2])
def test_reflow_keeps_every_word_in_reading_order(columns):
    rng = random.Random()
    img, order, band = _bar_page(rng, columns)
    views = reflow_views(img, 256)
    assert views and all(v.size == (256, 256) for v in views)
    got = _words_in_views(views, gap=band)
    scale = BAND_PX / band
    assert len(got) == len(order), (len(got), len(order))
    want = [w * scale for w in order]
    # widths survive in order, up to resampling (a pixel or two) - or a hard cut of a wide bar
    assert all(abs(g - e) <= 3 for g, e in zip(got, want, strict=True)), list(zip(got, want, strict=True))[
        :10
    ]


def test_reflow_lines_fit_the_view_and_scale_to_the_band():
    rng = random.Random()
    img, order, band = _bar_page(rng, 1)
    lines = find_lines(img)
    assert all(abs(ln.scale - BAND_PX / band) < 1e-6 for ln in lines)
    for v in reflow_views(img, 256):
        ink = np.asarray(v.convert("L")) < 128
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        assert rows.min() >= MARGIN - 1 and cols.min() >= MARGIN - 1 and cols.max() <= 256 - MARGIN


def test_blank_page_has_no_views():
    assert reflow_views(Image.new("RGB", (800, 1000), (250, 250, 250))) == []


def test_reflow_mode_spec():
    m = get_mode("reflow-256")
    assert m.reflow and m.base_size == m.image_size == 256 and not m.crop
    assert not get_mode("256").reflow


def test_runtime_decodes_each_view_and_joins_them():
    from ocrstream.model.config import tiny_test_config
    from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
    from ocrstream.model.runtime import OcrModel, VisionTokens
    from ocrstream.model.tokenizer import OcrTokenizer
    from ocrstream.train.export import ASSET_DIR

    torch.manual_seed(random.randrange(1 << 30))
    tok = OcrTokenizer.from_file(ASSET_DIR / "tokenizer.json")
    cfg = tiny_test_config(vocab_size=1024)
    cfg.image_token_id = tok.ids["image"]
    model = OcrModel(DeepseekOCRForCausalLM(cfg), tok)
    rng = random.Random()
    img, _, _ = _bar_page(rng, 2)
    vt = VisionTokens.from_bytes(model.encode(img, "reflow-64").to_bytes())
    n = len(reflow_views(img, 64))
    assert vt.views == n > 1 and vt.embeds.shape[0] % n == 0
    got = model.decode([vt], max_new_tokens=4, ngram=None)[0]
    singles = model.decode(
        [VisionTokens(e, "64", (1, 1), img.size, vt.weights_id) for e in vt.split_views()],
        max_new_tokens=4,
        ngram=None,
    )
    want = "\n".join(t for t in (r.text.strip() for r in singles) if t)
    assert got.text == want and got.token_ids == [t for r in singles for t in r.token_ids]
    blank = model.encode(Image.new("RGB", (300, 300), "white"), "reflow-64")
    assert blank.views == 0 and model.decode([blank], max_new_tokens=4)[0].text == ""
