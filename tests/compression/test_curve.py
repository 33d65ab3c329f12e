"""Compression curve: monotone lookup, file round trip, paper prior, measurement mechanics."""

from __future__ import annotations

import json
import random

import pytest

from ocrstream.compression.curve import (
    CURVE_FILE,
    CompressionCurve,
    CurvePoint,
    ModeCurve,
    bucket_points,
    curve_for,
    curve_from_samples,
    interpolate,
    measure,
    paper_curve,
)
from ocrstream.compression.ladder import model_ladder, order_modes
from ocrstream.model.modes import MODES, get_mode


def test_monotone_pools_violators_and_interpolates(rng):
    pts = [CurvePoint(1.0, 0.9, 2), CurvePoint(2.0, 0.95, 2), CurvePoint(3.0, 0.5, 1)]
    mono = ModeCurve(get_mode("256"), pts).monotone()
    assert [p.precision for p in mono] == pytest.approx([0.925, 0.925, 0.5])
    assert interpolate(mono, 0.2) == pytest.approx(0.925)  # flat below the first point
    assert interpolate(mono, 2.5) == pytest.approx(0.7125)
    assert interpolate(mono, 6.0) == pytest.approx(0.25)  # 1/ratio decay past the last point
    # random points: the monotone version never increases with compression
    raw = [CurvePoint(rng.uniform(0, 20), rng.random(), rng.randint(1, 9)) for _ in range(30)]
    mono = ModeCurve(get_mode("256"), raw).monotone()
    xs = sorted({rng.uniform(0, 25) for _ in range(50)})
    ys = [interpolate(mono, x) for x in xs]
    assert all(a >= b - 1e-12 for a, b in zip(ys, ys[1:], strict=False)), (rng.seed_value, ys)


def test_json_round_trip_and_pooled_fallback(tmp_path):
    curve = paper_curve()
    path = tmp_path / CURVE_FILE
    curve.save(path)
    back = CompressionCurve.load(path)
    assert back.to_dict() == curve.to_dict()
    assert back.expected_precision("small", 7.5) == pytest.approx(0.973)
    assert back.expected_precision("tiny", 10.5) == pytest.approx(0.965)
    # Base has no Fox points: pooled tiny+small points answer for it
    assert back.expected_precision("base", 3.0) == pytest.approx(back.pooled()[0].precision)
    assert curve_for(tmp_path).chars_per_token == curve.chars_per_token


def test_bad_files_raise_with_reason(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"schema": 99, "modes": {}}))
    with pytest.raises(ValueError, match="schema 99"):
        CompressionCurve.load(p)
    p.write_text(
        json.dumps(
            {
                "schema": 1,
                "modes": {"256": {"base_size": 256, "image_size": 256, "crop": False, "points": []}},
            }
        )
    )
    with pytest.raises(ValueError, match="no measured points"):
        CompressionCurve.load(p)
    with pytest.raises(FileNotFoundError, match="compression.curve"):
        curve_for(tmp_path)
    assert curve_for(tmp_path, config_name="deepseek-ocr").modes["tiny"].points


def test_bucket_points_means():
    pts = bucket_points([(1.22, 1.0), (1.3, 0.5), (7.0, 0.2)])
    assert [(round(p.compression, 3), p.precision, p.pages) for p in pts] == [(1.26, 0.75, 2), (7.0, 0.2, 1)]


def test_thin_buckets_join_a_neighbour():
    """A point stands on min_pages samples: thin buckets join the next one, a thin last one the one
    before, so one lucky page cannot make a rung look good at its ratio."""
    rng = random.Random()
    lucky = (rng.uniform(0.9, 0.99), 0.99)
    dense = [(rng.uniform(1.21, 1.34), rng.uniform(0.6, 0.8)) for _ in range(rng.randint(3, 9))]
    tail = (rng.uniform(1.5, 1.7), 0.5)
    samples = [lucky, *dense, tail]
    plain = bucket_points(samples)
    assert [p.pages for p in plain] == [1, len(dense), 1]
    pts = bucket_points(samples, min_pages=3)
    assert len(pts) == 1 and pts[0].pages == len(samples)
    assert pts[0].precision == pytest.approx(sum(p for _, p in samples) / len(samples))
    assert pts[0].compression == pytest.approx(sum(c for c, _ in samples) / len(samples))
    # enough pages on each side: nothing joins
    two = [(0.95, 0.99)] * 3 + dense
    assert [p.pages for p in bucket_points(two, min_pages=3)] == [3, len(dense)]


def test_ladders():
    from ocrstream.model.config import embedded_config, official_config, tiny_test_config

    assert [m.name for m in model_ladder(official_config())] == ["large", "base", "small", "tiny"]
    assert [m.base_size for m in model_ladder(tiny_test_config())] == [320, 256, 160, 128]
    assert [m.base_size for m in model_ladder(embedded_config())] == [640, 512, 320, 256]
    assert [m.name for m in order_modes([MODES["tiny"], MODES["large"], MODES["base"]])] == [
        "large",
        "base",
        "tiny",
    ]


def test_measure_mechanics_with_tiny_model(model):
    """Real encode/decode through the tiny random model: samples carry the right token counts."""
    from ocrstream.compression.render import PageRenderer

    pages = [(p.image, p.text) for p in PageRenderer(256).render("alpha beta gamma delta " * 3)]
    modes = model_ladder(model.config)[1:3]
    samples = measure(model, pages, modes, max_new_tokens=4)
    assert [s.vision_tokens for s in samples] == [16, 9]  # 256 -> 4x4, 160 -> 3x3 encoder tokens
    assert all(0.0 <= s.precision <= 1.0 for s in samples)
    assert samples[0].text_tokens == len(model.tokenizer.encode(pages[0][1]))
    curve = curve_from_samples(samples, modes, model={"name": "tiny"})
    assert set(curve.modes) == {"256", "160"}
    assert curve.chars_per_token == pytest.approx(1.0)  # character-level tokenizer
    # the pixel estimate's calibration: true characters / estimated, over the measured pages
    from ocrstream.compression.density import estimate

    est = estimate(pages[0][0]).chars
    assert samples[0].est_chars == pytest.approx(est)
    assert curve.density_scale == pytest.approx(len(pages[0][1]) / est)
