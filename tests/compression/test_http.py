"""The context router mounted on a bare FastAPI app, served through the ASGI test client."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from ocrstream.cache.memory import MemoryCache
from ocrstream.compression.http import ContextRegistry, context_router
from ocrstream.store.local import LocalStore


def test_router_add_stats_tokens_text(model, rng, tmp_path):
    app = FastAPI()
    app.include_router(
        context_router(ContextRegistry(lambda: model, LocalStore(tmp_path), MemoryCache(), 60)), prefix="/v1"
    )
    client = TestClient(app)
    for i in range(4):
        text = f"turn {i} " + " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(15))
        r = client.post("/v1/context/chat/segments", json={"text": text})
        assert r.status_code == 201, r.text
        assert r.json()["stats"]["used_tokens"] <= 60
    st = client.get("/v1/context/chat").json()
    assert st["budget_tokens"] == 60 and 0 < st["used_tokens"] <= 60
    toks = client.get("/v1/context/chat/tokens").json()
    assert toks["total_tokens"] == st["used_tokens"]
    counts = [s["tokens"] for s in toks["segments"]]
    assert counts == sorted(counts)  # oldest first, never more tokens than newer ones
    assert all(s["key"].startswith("context/chat/tokens/") for s in toks["segments"])
    text = client.get("/v1/context/chat/text", params={"max_new_tokens": 2}).json()
    assert [s["seq"] for s in text["segments"]] == [s["seq"] for s in toks["segments"]]


def test_router_errors(model, tmp_path):
    app = FastAPI()
    app.include_router(context_router(ContextRegistry(lambda: model, LocalStore(tmp_path), None, 60)))
    client = TestClient(app)
    r = client.post("/context/bad name!/segments", json={"text": "x"})
    assert r.status_code == 422 and "context name" in r.json()["detail"]["detail"]
    assert client.post("/context/ok/segments", json={"text": ""}).status_code == 422
    assert client.get("/context/ok/text", params={"max_new_tokens": 0}).status_code == 422

    def no_model():
        raise FileNotFoundError("no model checkpoint at /nowhere")

    app2 = FastAPI()
    app2.include_router(context_router(ContextRegistry(no_model, LocalStore(tmp_path / "b"))))
    r = TestClient(app2).get("/context/x")
    assert r.status_code == 503 and r.json()["detail"]["reason"] == "model_unavailable"
