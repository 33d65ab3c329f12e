"""Ingest: HTTP API (auth, limits, OpenAPI, status/results), duplicates, folder source."""

from __future__ import annotations

from fastapi.testclient import TestClient

from ocrstream.messages import DocumentSubmitted, topic
from ocrstream.services.ingest.api import create_app
from ocrstream.services.ingest.handler import Ingestor
from ocrstream.services.ingest.sources import FolderSource
from ocrstream.services.runtime import publish_messages
from tests.documents import make_pdf, random_words

P = "ing."


def _ingestor(bb, max_bytes=10_000):
    prod = bb.bus.producer()
    return Ingestor(bb.store, lambda m, s: publish_messages(prod, P, m, s), bb.telemetry, max_bytes=max_bytes)


def _submitted(bb):
    return [
        DocumentSubmitted.from_bytes(r.value, r.headers) for r in bb.bus.records(topic(DocumentSubmitted, P))
    ]


def test_api_auth_upload_status_and_limits(backbone, rng):
    ing = _ingestor(backbone)
    client = TestClient(create_app(ing, backbone.telemetry, api_keys=("k1",)))
    pdf = make_pdf([random_words(rng, 2)])
    files = {"file": ("a.pdf", pdf, "application/pdf")}
    assert client.post("/v1/documents", files=files).status_code == 401
    assert client.post("/v1/documents", files=files, headers={"X-API-Key": "nope"}).status_code == 401
    r = client.post("/v1/documents", files=files, data={"mode": "tiny"}, headers={"X-API-Key": "k1"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["duplicate"] is False and body["status"] == "submitted"
    (msg,) = _submitted(backbone)
    assert (msg.job_id, msg.mode, msg.prompt, msg.filename) == (body["job_id"], "tiny", "free_ocr", "a.pdf")
    # the record carries the document's trace context
    assert any(k == "traceparent" for k, _ in backbone.bus.records(topic(DocumentSubmitted, P))[0].headers)
    again = client.post(
        "/v1/documents", files=files, data={"mode": "tiny"}, headers={"X-API-Key": "k1"}
    ).json()
    assert (again["job_id"], again["duplicate"]) == (body["job_id"], True)
    assert len(_submitted(backbone)) == 1
    st = client.get(f"/v1/jobs/{body['job_id']}", headers={"X-API-Key": "k1"}).json()
    assert (st["status"], st["pages_done"], st["filename"]) == ("submitted", 0, "a.pdf")
    res = client.get(f"/v1/jobs/{body['job_id']}/result", headers={"X-API-Key": "k1"})
    assert res.status_code == 404 and res.json()["reason"] == "not_found"
    big = {"file": ("big.pdf", b"%PDF" + bytes(20_000), "application/pdf")}
    r = client.post("/v1/documents", files=big, headers={"X-API-Key": "k1"})
    assert r.status_code == 413 and r.json()["reason"] == "oversized"
    empty = {"file": ("e.pdf", b"", "application/pdf")}
    assert client.post("/v1/documents", files=empty, headers={"X-API-Key": "k1"}).json()["reason"] == "empty"
    assert client.get("/v1/jobs/unknown", headers={"X-API-Key": "k1"}).status_code == 404
    assert "/v1/documents" in client.get("/openapi.json").json()["paths"]
    assert client.get("/healthz").status_code == 200
    assert b"ocrstream_pages_total" in client.get("/metrics").content


def test_folder_source_submits_each_file_once(backbone, rng, tmp_path):
    ing = _ingestor(backbone)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(3):
        (inbox / f"d{i}.pdf").write_bytes(make_pdf([random_words(rng, 2)]))
    (inbox / "skip.txt").write_text("x")
    src = FolderSource(inbox, ing, backbone.store)
    assert src.scan() == 3
    assert src.scan() == 0
    (inbox / "copy.pdf").write_bytes((inbox / "d0.pdf").read_bytes())  # same content, new name
    assert src.scan() == 1
    assert len(_submitted(backbone)) == 3  # the copy was a duplicate by content hash


def test_reference_topic_submits_and_bad_refs_dead_letter(backbone, rng, tmp_path):
    from ocrstream.config import WorkerConfig
    from ocrstream.messages import DeadLetter, DocumentRef
    from ocrstream.services.ingest.handler import RefHandler
    from ocrstream.services.ingest.sources import make_fetcher
    from ocrstream.services.runtime import Worker

    ing = _ingestor(backbone)
    doc = tmp_path / "ref.pdf"
    doc.write_bytes(make_pdf([random_words(rng, 2)]))
    prod = backbone.bus.producer()
    refs = [
        DocumentRef(uri=str(doc), mode="tiny"),
        DocumentRef(uri=str(tmp_path / "missing.pdf")),
        DocumentRef(uri="http://x/y.pdf"),
    ]
    publish_messages(prod, P, refs, None)
    cfg = WorkerConfig(max_wait_ms=0, metrics_port=0)
    fetch = make_fetcher(None, roots=[tmp_path])
    w = Worker(RefHandler(ing, fetch), backbone.bus, backbone.telemetry, cfg, P)
    assert w.run_once(0) == 3
    (msg,) = _submitted(backbone)
    assert (msg.filename, msg.mode) == ("ref.pdf", "tiny")
    dls = [DeadLetter.from_bytes(r.value) for r in backbone.bus.records(topic(DeadLetter, P))]
    assert sorted((d.original_key, d.reason) for d in dls) == sorted(
        [(str(tmp_path / "missing.pdf"), "not_found"), ("http://x/y.pdf", "invalid_message")]
    )


def test_context_stores_are_served_on_the_ingest_api(backbone, rng):
    from ocrstream.compression.http import ContextRegistry
    from tests.compression.conftest import tiny_model

    loads = []

    def load():
        loads.append(1)
        return tiny_model(0)

    registry = ContextRegistry(load, backbone.store, backbone.cache, 40)
    client = TestClient(create_app(_ingestor(backbone), backbone.telemetry, ("k1",), context=registry))
    assert not loads  # the model loads on the first context request, not with the app
    text = " ".join(random_words(rng, 12))
    assert client.post("/v1/context/notes/segments", json={"text": text}).status_code == 401
    key = {"X-API-Key": "k1"}
    for _ in range(3):
        r = client.post("/v1/context/notes/segments", json={"text": text}, headers=key)
        assert r.status_code == 201, r.text
    st = client.get("/v1/context/notes", headers=key).json()
    assert st["budget_tokens"] == 40 and 0 < st["used_tokens"] <= 40 and len(loads) == 1
    kept = client.get("/v1/context/notes/tokens", headers=key).json()["segments"]
    assert all(backbone.store.exists(s["key"]) for s in kept)  # durable tier: the pipeline's store
    assert "/v1/context/{name}/segments" in client.get("/openapi.json").json()["paths"]


def test_context_api_without_a_model_answers_503(backbone):
    from ocrstream.compression.http import ContextRegistry

    def no_torch():
        raise ImportError("No module named 'torch'")

    app = create_app(
        _ingestor(backbone),
        backbone.telemetry,
        context=ContextRegistry(no_torch, backbone.store),
        dev_open=True,
    )
    r = TestClient(app).post("/v1/context/x/segments", json={"text": "hello"})
    assert r.status_code == 503 and r.json()["detail"]["reason"] == "model_unavailable", r.text
    assert "torch" in r.json()["detail"]["detail"]
    # the rest of the API is unaffected
    assert TestClient(app).get("/healthz").status_code == 200
