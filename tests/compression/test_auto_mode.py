"""choose_mode: cheapest mode meeting the target, denser pages get more tokens, reasons recorded."""

from __future__ import annotations

import pytest
from PIL import Image

from ocrstream.compression.auto_mode import choose_mode
from ocrstream.compression.curve import CompressionCurve, CurvePoint, ModeCurve, paper_curve
from ocrstream.compression.hooks import is_auto
from ocrstream.compression.render import PageRenderer
from ocrstream.model.modes import get_mode


def toy_curve() -> CompressionCurve:
    """Precision 1 up to 2 text tokens per encoder token, 0.5 at 6, per mode alike."""
    modes = {}
    for side in ("320", "256", "160", "128"):
        modes[side] = ModeCurve(get_mode(side), [CurvePoint(2.0, 1.0, 5), CurvePoint(6.0, 0.5, 5)])
    return CompressionCurve(modes, chars_per_token=3.0)


def test_text_layer_density_picks_cheapest_sufficient_mode():
    curve = toy_curve()
    size = (256, 256)
    # 128 -> 4 encoder tokens; 30 chars = 10 text tokens: ratio 2.5 -> 0.9375 expected
    sparse = choose_mode(None, 30, curve, target=0.9, page_size=size)
    assert sparse.mode == "128"
    assert sparse.expected_precision == pytest.approx(0.9375)
    assert sparse.est_text_tokens == pytest.approx(10.0)
    assert sparse.vision_tokens == 7 and sparse.density_source == "text-layer"
    assert "cheapest" in sparse.reason and "text-layer" in sparse.reason
    # 300 chars = 100 text tokens: 320 (25 tokens) gives ratio 4 -> 0.75; nothing reaches 0.9
    dense = choose_mode(None, 300, curve, target=0.9, page_size=size)
    assert dense.mode == "320" and "no mode reaches target" in dense.reason
    mid = choose_mode(None, 120, curve, target=0.9, page_size=size)  # 40 tokens: 256 -> 2.5
    assert mid.mode == "256"  # 320 also meets it but costs 31 placeholders, not 21
    assert mid.expected_precision >= 0.9


def test_image_density_chooses_at_least_two_modes():
    curve = toy_curve()
    r = PageRenderer(256)
    short = r.render("Two words")[0].image
    full = r.render("a long stretch of ordinary English prose fills the page " * 8)[0].image
    picks = {choose_mode(img, None, curve, target=0.9).mode for img in (short, full)}
    assert len(picks) >= 2, picks
    assert choose_mode(short, None, curve, target=0.9).density_source == "image"


def test_image_estimates_are_scaled_by_the_curves_density_calibration(rng):
    """The curve is indexed by true compression: a pixel estimate is scaled by the curve's measured
    true/estimated character ratio before the look-up; a text layer's exact count is not."""
    import dataclasses

    curve = toy_curve()
    scale = rng.uniform(1.1, 2.0)
    scaled = dataclasses.replace(curve, density_scale=scale)
    img = PageRenderer(256).render("a long stretch of ordinary English prose fills the page " * 4)[0].image
    plain, cal = choose_mode(img, None, curve, target=0.9), choose_mode(img, None, scaled, target=0.9)
    assert cal.est_text_tokens == pytest.approx(plain.est_text_tokens * scale), scale
    assert choose_mode(None, 120, scaled, target=0.9, page_size=(256, 256)).est_text_tokens == pytest.approx(
        40.0
    )
    # and it survives the curve's JSON
    assert CompressionCurve.from_dict(scaled.to_dict()).density_scale == pytest.approx(scale, abs=1e-4)


def test_reference_margin_never_exceeds_reference_cost():
    curve = paper_curve()
    page = Image.new("RGB", (1024, 1024), "white")
    for chars in (200, 1500, 4000, 9000):
        c = choose_mode(page, chars, curve, target=1.0, reference="base", margin=0.02)
        base_p = curve.expected_precision("base", c.est_text_tokens / 256)
        assert c.expected_precision >= base_p - 0.02 - 1e-9, (chars, c)
        assert "base expects" in c.reason
    # few chars: tiny already meets Base's precision within the margin
    assert choose_mode(page, 200, curve, target=1.0, reference="base", margin=0.02).mode == "tiny"


def test_bad_arguments():
    curve = toy_curve()
    with pytest.raises(ValueError, match="target precision"):
        choose_mode(None, 10, curve, target=1.5, page_size=(256, 256))
    with pytest.raises(ValueError, match="margin"):
        choose_mode(None, 10, curve, margin=-1, page_size=(256, 256))
    with pytest.raises(ValueError, match="curve"):
        choose_mode(None, 10, None, page_size=(256, 256))
    with pytest.raises(ValueError, match="page image or page_size"):
        choose_mode(None, 10, curve)
    assert is_auto("AUTO") and not is_auto("base") and not is_auto(None)


def test_hook_chooses_per_page_modes(model, tmp_path):
    from ocrstream.compression.auto_mode import policy_for
    from ocrstream.compression.hooks import resolve_mode
    from ocrstream.errors import PermanentError

    model.config.to_json_file(tmp_path / "config.json")
    toy_curve().save(tmp_path / "compression_curve.json")
    assert policy_for(str(tmp_path)).reference == "256"  # the tiny model's view side is its Base
    r = PageRenderer(256)
    sparse = r.render("Two words")[0].image
    dense = r.render("a long stretch of ordinary English prose fills the page " * 8)[0].image
    modes = [resolve_mode("auto", img, str(tmp_path)) for img in (dense, sparse, dense)]
    assert modes == ["256", "128", "256"]
    vts = [model.encode(img, m) for img, m in zip((dense, sparse, dense), modes, strict=True)]
    assert [vt.n_placeholders for vt in vts] == [21, 7, 21]
    assert resolve_mode("base", sparse, str(tmp_path)) == "base"  # fixed modes pass through
    with pytest.raises(PermanentError, match="no compression_curve.json") as err:
        resolve_mode("auto", sparse, str(tmp_path / "nowhere"), page="docs/x/1.png")
    assert err.value.reason == "bad_mode"
