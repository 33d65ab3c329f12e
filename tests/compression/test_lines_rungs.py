"""Compression for a line-strip model: its rungs, what a page costs on each, the curve, auto mode."""

from __future__ import annotations

import random

import pytest
from PIL import Image, ImageDraw

from ocrstream.compression.auto_mode import choose_mode
from ocrstream.compression.curve import CompressionCurve, CurvePoint, ModeCurve, curve_from_samples, measure
from ocrstream.compression.ladder import model_ladder, page_tokens
from ocrstream.model.modes import get_mode
from tests.compression.conftest import LINES_RUNGS as RUNGS


def text_page(rng: random.Random, n_lines: int) -> Image.Image:
    from ocrstream.data.fonts import load_font, train_fonts

    face = rng.choice([f for f in train_fonts() if f.path.suffix == ".ttf"])
    font = load_font(face.path, rng.randint(16, 24))
    img = Image.new("RGB", (900, 1200), "white")
    d = ImageDraw.Draw(img)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "bold",
        "wizards",
        "quiz",
    ]
    for i in range(n_lines):
        d.text(
            (60, 60 + i * 40),
            " ".join(rng.choice(words) for _ in range(rng.randint(3, 10))),
            font=font,
            fill="black",
        )
    return img


def test_ladder_is_the_declared_rungs_widest_first(lines_model):
    assert [m.name for m in model_ladder(lines_model.config)] == list(RUNGS)
    cfg = lines_model.config.replace(compression_modes=("lines-50", "lines", "lines-75"))
    assert [m.name for m in model_ladder(cfg)] == list(RUNGS)


def test_page_tokens_equal_what_the_encoder_makes(lines_model):
    rng = random.Random()
    img = text_page(rng, rng.randint(3, 12))
    with pytest.raises(ValueError, match="page image"):
        page_tokens("lines", img.size)
    costs = []
    for rung in RUNGS:
        placeholders, tokens = page_tokens(rung, img.size, img)
        vt = lines_model.encode(img, rung)
        assert placeholders == vt.n_placeholders
        assert tokens == vt.n_placeholders - 2 * vt.views
        costs.append(tokens)
    assert costs[0] > costs[1] > costs[2]  # squeezing the strips saves tokens


def test_measured_curve_of_lines_rungs_round_trips(lines_model, tmp_path):
    rng = random.Random()
    pages = [(text_page(rng, 2), "the quick brown fox") for _ in range(2)]
    modes = [get_mode(r) for r in RUNGS]
    samples = measure(lines_model, pages, modes, max_new_tokens=8)
    assert {s.mode for s in samples} == set(RUNGS)
    for rung in RUNGS:  # compression is characters (= tokens here) per vision token of the strips
        got = sorted(s.vision_tokens for s in samples if s.mode == rung)
        assert got == sorted(page_tokens(rung, img.size, img)[1] for img, _ in pages)
        assert all(s.text_tokens == len("the quick brown fox") for s in samples)
    curve = curve_from_samples(samples, modes)
    curve.save(tmp_path / "c.json")
    back = CompressionCurve.load(tmp_path / "c.json")
    assert [m.name for m in back.mode_objects()] == list(RUNGS)
    assert all(m.lines for m in back.mode_objects())
    assert back.modes["lines-50"].mode.squeeze == 0.5


def test_auto_mode_picks_a_cheaper_rung_only_within_the_margin():
    rng = random.Random()
    img = text_page(rng, 8)
    base_tokens = page_tokens("lines", img.size, img)[1]
    chars = rng.randint(300, 500)
    ratio = chars / base_tokens

    def curve(p75: float) -> CompressionCurve:
        pts = {"lines": 0.98, "lines-75": p75, "lines-50": 0.6}
        return CompressionCurve(
            {
                r: ModeCurve(get_mode(r), [CurvePoint(0.1, pts[r], 9), CurvePoint(20.0, pts[r], 9)])
                for r in RUNGS
            },
            chars_per_token=1.0,
        )

    good = choose_mode(img, chars, curve(0.97), target=1.0, reference="lines", margin=0.02)
    assert good.mode == "lines-75" and good.vision_tokens < page_tokens("lines", img.size, img)[0]
    assert good.compression == pytest.approx(chars / page_tokens("lines-75", img.size, img)[1])
    bad = choose_mode(img, chars, curve(0.9), target=1.0, reference="lines", margin=0.02)
    assert bad.mode == "lines" and bad.compression == pytest.approx(ratio)
