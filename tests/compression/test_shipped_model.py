"""Reading back a context store with the shipped model: recent segments at their mode's precision.

Runs on the shipped embedded model (``ocrstream/assets/model``) and the compression curve stored
beside it; OCRSTREAM_COMPRESSION_TEST_MODEL points it at another snapshot folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ocrstream.model.runtime import SHIPPED_MODEL_DIR
from tests.documents import heldout_segments

MODEL_DIR = Path(os.environ.get("OCRSTREAM_COMPRESSION_TEST_MODEL") or SHIPPED_MODEL_DIR)
READS_FLOOR = 0.5  # below this expected precision at the sharpest rung the model cannot read yet
RECENT = 8  # segments kept at the sharpest rung and checked
# One segment's precision scatters by about 0.15 around its bucket's mean, so the mean of 8 has a
# standard error near 0.05: 0.15 is three of them.
TOLERANCE = 0.15

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "config.json").exists(),
    reason=f"no model snapshot at {MODEL_DIR} (the shipped model is exported by `ocrstream train export`)",
)


def test_recent_segments_read_back_at_their_mode_precision(tmp_path):
    import torch

    from ocrstream.cache.memory import MemoryCache
    from ocrstream.compression.context_store import ContextStore, curve_ladder
    from ocrstream.compression.curve import CURVE_FILE, CompressionCurve
    from ocrstream.model.runtime import OcrModel
    from ocrstream.store.local import LocalStore
    from ocrstream.textdist import cer

    torch.set_num_threads(1)
    assert (MODEL_DIR / CURVE_FILE).exists(), f"{CURVE_FILE} must be stored beside the model in {MODEL_DIR}"
    curve = CompressionCurve.load(MODEL_DIR / CURVE_FILE)
    model = OcrModel.load(MODEL_DIR)
    ladder, quality = curve_ladder(model, curve)
    seed = int.from_bytes(os.urandom(4), "little")
    store = LocalStore(tmp_path)
    probe = ContextStore("probe", model, ladder, 0, store)
    texts = heldout_segments(RECENT + 3, probe.page_size, seed, font_px=probe.renderer.font_px)
    # what each page costs on each rung (a line reader's pages cost what their lines cost)
    costs = [probe.page_costs(probe.renderer.render(t)[0].image) for t in texts]
    budget = sum(c[0] for c in costs[-RECENT:]) + sum(c[-1] for c in costs[:-RECENT])
    cs = ContextStore("ctx", model, ladder, budget, store, MemoryCache(), quality=quality)
    for t in texts:
        cs.add(t)
    reads = cs.read_text(max_new_tokens=400)
    assert cs.used_tokens() <= cs.budget
    # the newest pages are kept (the budget holds all of them at the sharpest rung); the planner
    # may still fade them a rung where the curve says that costs almost nothing in precision
    recent = reads[-RECENT:]
    names = [m.name for m in ladder]
    assert [r.segment.seq for r in recent] == list(range(3, RECENT + 3)), [r.segment.mode for r in reads]
    ranks = [names.index(r.segment.mode) for r in recent]
    assert ranks == sorted(ranks, reverse=True), ranks  # an older page is never sharper
    stored = {seg.seq: vt for seg, vt in cs.read_tokens()}
    got, want = [], []
    for r in recent:
        ref = texts[r.segment.seq]
        # the store hands back exactly the tokens a fresh encode of the page in that mode gives
        fresh = model.encode(cs.renderer.render(ref)[0].image, r.segment.mode)
        assert torch.equal(stored[r.segment.seq].embeds, fresh.embeds), (seed, r.segment)
        ratio = len(model.tokenizer.encode(ref)) / r.segment.tokens
        got.append(max(0.0, 1 - cer(ref, r.text)))
        want.append(curve.expected_precision(r.segment.mode, ratio))
    mean_got, mean_want = sum(got) / len(got), sum(want) / len(want)
    top_expected = max(curve.expected_precision(m, 1.0) for m in ladder)
    if top_expected < READS_FLOOR:
        pytest.xfail(
            f"model cannot read yet: curve precision {top_expected:.3f} at 1x, read back {mean_got:.3f}"
        )
    assert mean_got >= mean_want - TOLERANCE, (seed, got, want)


def test_auto_mode_spends_fewer_tokens_within_the_margin_of_base():
    """Issue 9's acceptance on the shipped model: bench/auto_mode.py's held-out mixed page set
    (levels 0-3, density from pixels) read in auto mode and in fixed Base."""
    import importlib.util

    import torch

    from ocrstream.compression.auto_mode import policy_for
    from ocrstream.model.runtime import OcrModel

    spec = importlib.util.spec_from_file_location(
        "bench_auto_mode", Path(__file__).resolve().parents[2] / "bench" / "auto_mode.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.set_num_threads(2)
    model = OcrModel.load(MODEL_DIR)
    policy = policy_for(str(MODEL_DIR))
    pages = bench.bench_pages(24, model.config.sam.img_size, seed=5, strips=model.config.sam.strips)
    s = bench.run(model, policy, pages, max_new_tokens=200)["summary"]
    assert len(s["modes_chosen"]) >= 2, s
    assert s["tokens_auto"] < s["tokens_base"], s
    assert s["precision_auto"] >= s["precision_base"] - policy.margin, s
