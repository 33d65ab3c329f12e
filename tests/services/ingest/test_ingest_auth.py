"""Ingest API keys: required unless the dev flag is set, compared in constant time, checked before an
upload's body is read; X-API-Key or Authorization: Bearer."""

from __future__ import annotations

import asyncio
import hmac
import os

import pytest
from fastapi.testclient import TestClient

from ocrstream.messages import DeadLetter, DocumentSubmitted, topic
from ocrstream.services.ingest import auth as auth_mod
from ocrstream.services.ingest.api import create_app
from ocrstream.services.ingest.handler import Ingestor
from ocrstream.services.runtime import publish_messages
from tests.documents import make_pdf, random_words

P = "auth."


def _ingestor(bb, max_bytes=64 * 1024 * 1024):
    prod = bb.bus.producer()
    return Ingestor(bb.store, lambda m, s: publish_messages(prod, P, m, s), bb.telemetry, max_bytes=max_bytes)


def test_no_keys_refuses_to_build_unless_dev_open(backbone, rng):
    with pytest.raises(ValueError, match="OCRSTREAM_INGEST_API_KEYS.*OCRSTREAM_INGEST_DEV_OPEN"):
        create_app(_ingestor(backbone), backbone.telemetry)
    with pytest.raises(ValueError):
        create_app(_ingestor(backbone), backbone.telemetry, ("",))  # an empty key is no key
    client = TestClient(create_app(_ingestor(backbone), backbone.telemetry, dev_open=True))
    r = client.post("/v1/documents", files={"file": ("a.pdf", make_pdf([random_words(rng, 2)]))})
    assert r.status_code == 202, r.text


def test_service_main_fails_fast_without_keys():
    from ocrstream.services.ingest.main import main

    # Nothing listens on port 1: the check must come before any connection is tried.
    env = {
        "OCRSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "OCRSTREAM_STORE": "local",
        "OCRSTREAM_CACHE": "memory",
    }
    with pytest.raises(ValueError, match="no API keys"):
        main(env)


def test_keys_checked_on_every_route(backbone, rng):
    keys = tuple(os.urandom(12).hex() for _ in range(3))
    ing = _ingestor(backbone)
    client = TestClient(create_app(ing, backbone.telemetry, keys))
    pdf = make_pdf([random_words(rng, 2)])
    wrong = os.urandom(12).hex()  # same length as the real ones
    for headers in (
        {},
        {"X-API-Key": wrong},
        {"Authorization": f"Bearer {wrong}"},
        {"X-API-Key": keys[0][:-1]},
    ):
        r = client.post("/v1/documents", files={"file": ("a.pdf", pdf)}, headers=headers)
        assert r.status_code == 401 and r.json()["detail"]["reason"] == "unauthorized", (headers, r.text)
        assert client.get("/v1/jobs/x", headers=headers).status_code == 401
    assert backbone.bus.records(topic(DocumentSubmitted, P)) == []
    assert backbone.bus.records(topic(DeadLetter, P)) == []  # unauthenticated requests leave no records
    r = client.post("/v1/documents", files={"file": ("a.pdf", pdf)}, headers={"X-API-Key": rng.choice(keys)})
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]
    assert (
        client.get(f"/v1/jobs/{job}", headers={"Authorization": f"Bearer {rng.choice(keys)}"}).status_code
        == 200
    )
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200


def test_keys_compared_in_constant_time_against_every_key(backbone, monkeypatch):
    keys = tuple(os.urandom(8).hex() for _ in range(4))
    compared = []
    real = hmac.compare_digest

    def spy(a, b):  # noqa: ANN001, ANN202
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(auth_mod.hmac, "compare_digest", spy)
    client = TestClient(create_app(_ingestor(backbone), backbone.telemetry, keys))
    assert client.get("/v1/jobs/x", headers={"X-API-Key": keys[0]}).status_code == 404
    # No early exit on the first match: every key is compared, on the gate and in the dependency.
    assert compared and set(compared) == {k.encode() for k in keys} and len(compared) % len(keys) == 0


def _asgi(app, method, path, headers, chunks):
    """Drive the ASGI app with a request body that arrives chunk by chunk; returns (status, body,
    chunks read): what a server would have taken off the socket."""
    reads = 0
    source = iter(chunks)
    out = []

    async def receive():
        nonlocal reads
        try:
            body = next(source)
        except StopIteration:
            return {"type": "http.request", "body": b"", "more_body": False}
        reads += 1
        return {"type": "http.request", "body": body, "more_body": True}

    async def send(msg):
        out.append(msg)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in out if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
    return start["status"], body, reads


def _multipart_stream(boundary: str, chunk: int, n: int):
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n%PDF-"
    ).encode()
    for _ in range(n):
        yield os.urandom(chunk)
    yield f"\r\n--{boundary}--\r\n".encode()


def test_unauthenticated_upload_refused_before_its_body_is_read(backbone):
    app = create_app(_ingestor(backbone), backbone.telemetry, ("right-key",))
    boundary = os.urandom(8).hex()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}", "x-api-key": "wrong-key"}
    status, body, reads = _asgi(
        app, "POST", "/v1/documents", headers, _multipart_stream(boundary, 65536, 200)
    )
    assert status == 401 and b"unauthorized" in body
    assert reads == 0


def test_upload_cut_off_as_soon_as_it_passes_the_limit(backbone):
    limit = 1024 * 1024
    ing = _ingestor(backbone, max_bytes=limit)
    app = create_app(ing, backbone.telemetry, ("k",))
    boundary = os.urandom(8).hex()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}", "x-api-key": "k"}
    chunk, n = 65536, 400  # a 26 MB body, sent without Content-Length (chunked)
    status, body, reads = _asgi(app, "POST", "/v1/documents", headers, _multipart_stream(boundary, chunk, n))
    assert status == 413 and b'"reason":"oversized"' in body, body
    # Read up to the limit (plus the form's allowance), not the whole body.
    assert reads <= (limit + 64 * 1024) // chunk + 2, reads
    # A declared Content-Length over the limit is refused before anything is read.
    headers["content-length"] = str(chunk * n)
    status, body, reads = _asgi(app, "POST", "/v1/documents", headers, _multipart_stream(boundary, chunk, n))
    assert (status, reads) == (413, 0)
    dls = [DeadLetter.from_bytes(r.value) for r in backbone.bus.records(topic(DeadLetter, P))]
    assert [(d.reason, d.original_topic) for d in dls] == [("oversized", "http POST /v1/documents")] * 2
    assert backbone.store.list("docs/") == []
