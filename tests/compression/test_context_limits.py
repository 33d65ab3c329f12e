"""Context stores are bounded: contexts per store (429), open ones in memory (LRU), segments per
context (409 for an add that alone is too big; the oldest are forgotten past the cap)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from ocrstream.cache.memory import MemoryCache
from ocrstream.compression.context_store import ContextStore
from ocrstream.compression.http import ContextRegistry, context_router
from ocrstream.compression.render import PageRenderer
from ocrstream.store.local import LocalStore
from tests.compression.conftest import tiny_model


def _client(registry):
    app = FastAPI()
    app.include_router(context_router(registry), prefix="/v1")
    return TestClient(app)


def _words(rng, n):
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega"]) for _ in range(n))


def test_contexts_per_store_capped_with_429_and_lru_in_memory(model, rng, tmp_path):
    store = LocalStore(tmp_path)
    reg = ContextRegistry(lambda: model, store, MemoryCache(), 200, max_stores=3, max_open=2)
    client = _client(reg)
    names = [f"c{i}-{rng.randrange(10**6)}" for i in range(3)]
    for name in names:
        assert client.post(f"/v1/context/{name}/segments", json={"text": _words(rng, 8)}).status_code == 201
    r = client.post("/v1/context/one-too-many/segments", json={"text": "x"})
    assert r.status_code == 429 and r.json()["detail"]["reason"] == "too_many_contexts", r.text
    assert "3 contexts exist, the limit is 3" in r.json()["detail"]["detail"]
    assert not store.exists("context/one-too-many/manifest.json")
    assert list(reg._stores) == names[1:]  # at most max_open held, least recently used closed
    before = client.get(f"/v1/context/{names[0]}").json()
    assert before["segments"] >= 1  # reopened from the store with its state
    r = client.post(f"/v1/context/{names[0]}/segments", json={"text": _words(rng, 8)})
    assert r.status_code == 201, r.text  # existing contexts keep working at the cap
    assert sorted(reg.names()) == sorted(names) and len(reg._stores) == 2
    # Another registry (another replica) over the same store sees the same count.
    other = _client(ContextRegistry(lambda: model, store, None, 200, max_stores=3))
    assert other.post("/v1/context/from-elsewhere/segments", json={"text": "y"}).status_code == 429


def test_segments_per_context_capped(model, rng, tmp_path):
    store = LocalStore(tmp_path)
    reg = ContextRegistry(lambda: model, store, None, 100_000, max_segments=3)
    client = _client(reg)
    per_page = PageRenderer(model.config.sam.img_size).chars_per_page
    long_text = _words(rng, 4 * per_page // 5)  # ~6 chars a word: several pages
    r = client.post("/v1/context/big/segments", json={"text": long_text})
    assert r.status_code == 409 and r.json()["detail"]["reason"] == "context_full", r.text
    assert [k for k in store.list("context/big/") if not k.endswith("manifest.json")] == []
    for _ in range(5):
        assert client.post("/v1/context/big/segments", json={"text": _words(rng, 6)}).status_code == 201
    st = client.get("/v1/context/big").json()
    assert st["segments"] == 3 and st["forgotten"] >= 2
    kept = [s["seq"] for s in st["segments_detail"]]
    assert kept == sorted(kept)[-3:] and max(kept) == st["forgotten"] + 2  # the newest three kept
    assert len(store.list("context/big/pages/")) == 3  # forgotten pages are deleted


def test_context_of_another_model_is_a_409(model, rng, tmp_path):
    store = LocalStore(tmp_path)
    ContextStore.open("shared", model, store, ladder=["tiny"], budget_tokens=500).add(_words(rng, 5))
    other = tiny_model(rng.randrange(2**31))
    assert other.weights_id != model.weights_id
    r = _client(ContextRegistry(lambda: other, store, None, 500)).get("/v1/context/shared")
    assert r.status_code == 409 and r.json()["detail"]["reason"] == "context_conflict", r.text
