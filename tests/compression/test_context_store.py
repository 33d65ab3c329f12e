"""Context store mechanics with a tiny random model: budget, age order, forgetting, persistence."""

from __future__ import annotations

import pytest

from ocrstream.cache.memory import MemoryCache
from ocrstream.compression.context_store import ContextStore
from ocrstream.compression.ladder import model_ladder
from ocrstream.errors import NotFound
from ocrstream.store.local import LocalStore


def words(rng, n: int) -> str:
    return " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(n))


def check_invariants(cs: ContextStore, ctx: str) -> None:
    pairs = cs.read_tokens()
    tokens = [vt.n_placeholders for _, vt in pairs]  # oldest first
    assert sum(tokens) == cs.used_tokens() <= cs.budget, ctx
    assert all(a <= b for a, b in zip(tokens, tokens[1:], strict=False)), (ctx, tokens)
    assert [vt.mode for _, vt in pairs] == [s.mode for s in cs.segments], ctx
    keys = set(cs.store.list(cs.prefix))
    expected = {cs.prefix + "manifest.json"}
    for s in cs.segments:
        expected |= {cs._page_key(s.seq), cs.token_key(s)}
    assert keys == expected, (ctx, sorted(keys ^ expected))  # forgotten and stale tokens are gone


def test_random_inserts_hold_budget_and_order(model, rng, tmp_path):
    ladder = model_ladder(model.config)
    for trial in range(3):
        budget = rng.randint(0, 120)
        cs = ContextStore(
            f"t{trial}", model, ladder, budget, LocalStore(tmp_path / str(trial)), MemoryCache()
        )
        for step in range(rng.randint(3, 7)):
            cs.add(words(rng, rng.randint(1, 70)))
            check_invariants(cs, f"seed={rng.seed_value} trial={trial} step={step} budget={budget}")
        assert cs.forgotten + len(cs.segments) == cs.next_seq


def test_fading_reopen_and_cache_fallback(model, rng, tmp_path):
    ladder = model_ladder(model.config)
    store = LocalStore(tmp_path)
    cs = ContextStore.open("chat", model, store, MemoryCache(), ladder=list(ladder), budget_tokens=80)
    for i in range(6):
        cs.add(f"turn {i}: " + words(rng, 12))
    modes = [s.mode for s in cs.segments]
    assert modes[-1] == ladder[0].name  # the newest segment is sharpest
    assert len(set(modes)) >= 2  # older ones faded
    before = [(s.seq, s.mode) for s in cs.segments]
    # a new process: nothing cached, everything comes back from the durable store
    again = ContextStore.open("chat", model, store, MemoryCache())
    assert [(s.seq, s.mode) for s in again.segments] == before
    vts = again.prefix_tokens()
    assert [vt.n_placeholders for vt in vts] == [s.tokens for s in cs.segments]
    # a smaller budget on reopen fades at once, never sharpens
    small = ContextStore.open("chat", model, store, MemoryCache(), budget_tokens=30)
    assert small.used_tokens() <= 30
    old = dict(before)
    rank = {m.name: i for i, m in enumerate(ladder)}
    assert all(rank[s.mode] >= rank[old[s.seq]] for s in small.segments)
    check_invariants(small, f"seed={rng.seed_value}")


def test_read_back_through_decoder(model, rng, tmp_path):
    cs = ContextStore("r", model, model_ladder(model.config), 200, LocalStore(tmp_path), MemoryCache())
    cs.add(words(rng, 10))
    cs.add(words(rng, 10))
    out = cs.read_text(max_new_tokens=3)
    assert [r.segment.seq for r in out] == [0, 1]
    assert all(0 < len(model.tokenizer.encode(r.text)) <= 3 or r.stopped for r in out)
    # the kept context as one multi-image prefix decodes as one prompt
    prefix = cs.prefix_tokens()
    res = model.decode([prefix], prompt=cs.prefix_prompt(n_images=len(prefix)), max_new_tokens=2)
    assert len(res) == 1 and res[0].n_tokens <= 2


def test_long_text_spans_pages_and_errors(model, tmp_path):
    cs = ContextStore("long", model, model_ladder(model.config), 1000, LocalStore(tmp_path))
    added = cs.add("word " * 400)
    assert len(added) >= 2 and len({s.group for s in added}) == 1
    with pytest.raises(ValueError, match="context name"):
        ContextStore("../x", model, model_ladder(model.config), 10, LocalStore(tmp_path))
    with pytest.raises(ValueError, match="budget_tokens must be >= 0, got -5"):
        ContextStore("x", model, model_ladder(model.config), -5, LocalStore(tmp_path))
    with pytest.raises(ValueError, match="empty text"):
        cs.add("   ")
    with pytest.raises(NotFound, match="no context 'nope'"):
        ContextStore.open("nope", model, LocalStore(tmp_path))


def test_curve_ladder_drops_dominated_rungs(model):
    from ocrstream.compression.context_store import curve_ladder
    from ocrstream.compression.curve import CompressionCurve, CurvePoint, ModeCurve
    from ocrstream.model.modes import get_mode

    def curve(levels: dict[str, float]) -> CompressionCurve:
        return CompressionCurve(
            {
                k: ModeCurve(get_mode(k), [CurvePoint(0.1, p, 1), CurvePoint(50.0, p, 1)])
                for k, p in levels.items()
            }
        )

    # upscaling past the trained view reads worse: 320 costs more than 256 for less, so it goes
    ladder, quality = curve_ladder(model, curve({"320": 0.7, "256": 0.9, "160": 0.6, "128": 0.3}))
    assert [m.name for m in ladder] == ["256", "160", "128"]
    assert quality == pytest.approx([0.9, 0.6, 0.3])
    # a curve that says the model cannot read ranks nothing: the plain ladder
    ladder, quality = curve_ladder(model, curve({"320": 0.01, "256": 0.05, "160": 0.0, "128": 0.0}))
    assert [m.name for m in ladder] == ["320", "256", "160", "128"] and quality is None
    assert curve_ladder(model, None)[1] is None


class Recording:
    """The tiny model, recording how each decode call was asked for."""

    def __init__(self, model):
        self.inner, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, vision, **kw):
        self.calls.append(kw)
        return self.inner.decode(vision, **kw)


def test_read_back_decodes_as_the_decoder_service_does(model, rng, tmp_path):
    from ocrstream.guard import DecodeSettings, GuardConfig, parse_ladder

    n, window = rng.randint(3, 12), rng.randint(20, 60)
    settings = DecodeSettings(GuardConfig(6), parse_ladder("t=0.0;mode=64;t=0.6"), (n, window))
    rec = Recording(model)
    cs = ContextStore(
        "s", rec, model_ladder(model.config), 200, LocalStore(tmp_path), MemoryCache(), decode=settings
    )
    for _ in range(3):
        cs.add(words(rng, 10))
    out = cs.read_text()
    assert rec.calls and all(c["ngram"] == (n, window) and c["max_new_tokens"] == 6 for c in rec.calls)
    assert {c["temperature"] for c in rec.calls} <= {0.0, 0.6}  # the mode rung is never run here
    for r in out:
        assert [a["temperature"] for a in r.attempts] == [0.0, 0.6][: len(r.attempts)]
        assert all(a["mode"] is None for a in r.attempts)
        assert r.outcome == ("ok" if r.attempts[-1]["outcome"] == "ok" else r.attempts[0]["outcome"])
        # a random model rarely stops in 6 tokens: the guard saw it, the ladder tried again
        if r.attempts[0]["outcome"] != "ok":
            assert len(r.attempts) == 2
    rec.calls.clear()
    cs.read_text(max_new_tokens=2)  # the HTTP API's per-request budget
    assert rec.calls and all(c["max_new_tokens"] == 2 for c in rec.calls)
