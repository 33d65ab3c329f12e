"""Progressive forgetting with a line reader: each page costs what its lines cost on each rung."""

from __future__ import annotations

from ocrstream import raster
from ocrstream.compression.context_store import STRIP_PAGE_SIZE, ContextStore
from ocrstream.compression.ladder import page_tokens
from ocrstream.compression.planner import plan_cost
from ocrstream.store.local import LocalStore
from tests.compression.conftest import LINES_RUNGS

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
]


def _text(rng, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def test_line_reader_pages_fade_under_the_budget_with_their_own_costs(lines_model, rng, tmp_path):
    store = LocalStore(tmp_path)
    budget = rng.randint(150, 600)
    cs = ContextStore("ctx", lines_model, LINES_RUNGS, budget, store)
    assert cs.page_size == STRIP_PAGE_SIZE and cs.lines
    for step in range(rng.randint(4, 8)):
        text = _text(rng, rng.randint(4, 60))
        kept = cs.add(text)
        segs = cs.segments
        ctx = f"seed={rng.seed_value} step={step} budget={budget}"
        if not kept:  # only a page that costs more than the budget even on the cheapest rung is refused
            newest = raster.fit_image(cs.renderer.render(text)[-1].image, cs.limits, "page")
            assert cs.page_costs(newest)[-1] > budget, ctx
            assert segs == [], ctx  # the present fades last: nothing older outlives it
        assert cs.used_tokens() <= budget, ctx
        rows = [s.costs for s in segs[::-1]]
        assert plan_cost(rows, [s.rung for s in segs[::-1]]) == cs.used_tokens(), ctx
        assert [s.rung for s in segs[::-1]] == sorted(s.rung for s in segs), ctx  # older never sharper
        for s in segs:  # the stored cost is what the page really costs on its rung
            assert s.costs == sorted(s.costs, reverse=True) and s.tokens == s.costs[s.rung], ctx
    if not cs.segments:  # the last page did not fit: a short one always does
        assert cs.add(_text(rng, 3)), f"seed={rng.seed_value} budget={budget}"
    # a segment's tokens are the page's strips, counted like the encoder lays them out
    seg = cs.segments[-1]
    page = store.get(cs._page_key(seg.seq))
    from io import BytesIO

    from PIL import Image

    img = Image.open(BytesIO(page)).convert("RGB")
    assert seg.costs == [page_tokens(m, img.size, img)[0] for m in cs.ladder]
    # it reopens with the same segments and reads back through the decoder
    again = ContextStore.open("ctx", lines_model, store)
    assert [s.seq for s in again.segments] == [s.seq for s in cs.segments]
    assert all(m.lines for m in again.ladder)
    reads = again.read_text(max_new_tokens=8)
    assert len(reads) == len(cs.segments)
