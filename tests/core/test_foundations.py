"""Messages, config, memory bus, caches, local store: the pieces every service stands on."""

from __future__ import annotations

import dataclasses

import pytest

from ocrstream.bus.memory import MemoryBus
from ocrstream.cache.base import pack_tokens, unpack_tokens
from ocrstream.cache.memory import MemoryCache
from ocrstream.config import DecoderConfig, IngestConfig, WorkerConfig, env_table
from ocrstream.errors import InvalidMessage, NotFound
from ocrstream.messages import HEADER_SCHEMA, MESSAGE_TYPES, DocumentSubmitted, PageDecoded, TokenRecord
from ocrstream.store.local import LocalStore
from ocrstream.telemetry import extract, inject, tracer_provider
from tests.documents import random_words


def _random_instance(cls, rng):
    kw = {}
    for f in dataclasses.fields(cls):
        t = f.type
        if "int" in t:
            kw[f.name] = 1
        elif "float" in t:
            kw[f.name] = rng.random()
        elif "bool" in t:
            kw[f.name] = rng.random() < 0.5
        elif "list" in t:
            kw[f.name] = [{"k": random_words(rng, 1)}]
        else:
            kw[f.name] = random_words(rng, 2) + " ünï"
    if "n_pages" in kw:
        kw["n_pages"] = 2
    return cls(**kw)


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
def test_message_roundtrip_and_validation(cls, rng):
    m = _random_instance(cls, rng)
    assert cls.from_bytes(m.to_bytes(), m.headers()) == m
    assert dict(m.headers())[HEADER_SCHEMA] == str(cls.SCHEMA_VERSION).encode()
    with pytest.raises(InvalidMessage, match="newer"):
        cls.from_bytes(m.to_bytes(), [(HEADER_SCHEMA, str(cls.SCHEMA_VERSION + 1).encode())])
    with pytest.raises(InvalidMessage):
        cls.from_bytes(b"[1, 2]")


def test_stored_records_carry_their_version_and_type(rng):
    rec = _random_instance(TokenRecord, rng)
    raw = rec.to_record()
    assert (raw["schema_version"], raw["message_type"]) == (TokenRecord.SCHEMA_VERSION, "TokenRecord")
    assert TokenRecord.from_record(raw) == rec
    # a record the encoder wrote before records were typed: the same fields, no version
    legacy = {k: v for k, v in raw.items() if k not in ("schema_version", "message_type")}
    assert TokenRecord.from_record(legacy) == rec
    with pytest.raises(InvalidMessage, match="newer"):
        TokenRecord.from_record({**raw, "schema_version": TokenRecord.SCHEMA_VERSION + 1})
    with pytest.raises(InvalidMessage, match="is a PageDecoded"):
        TokenRecord.from_record({**raw, "message_type": "PageDecoded"})
    with pytest.raises(InvalidMessage, match="missing field 'tokens_key'"):
        TokenRecord.from_record({k: v for k, v in raw.items() if k != "tokens_key"})
    with pytest.raises(InvalidMessage, match="page 3 outside 1..2"):
        TokenRecord.from_record({**raw, "page": 3})
    msg = rec.encoded("j", "d", "tiny", "markdown", allow_encode=False, width=7)
    assert (msg.job_id, msg.doc_id, msg.mode, msg.prompt, msg.allow_encode, msg.width) == (
        "j",
        "d",
        "tiny",
        "markdown",
        False,
        7,
    )
    assert all(getattr(msg, f.name) == getattr(rec, f.name) for f in dataclasses.fields(rec))


def test_message_field_checks():
    ok = PageDecoded("j", "d", 2, 3, "tiny", "markdown", "text", "model").to_dict()
    with pytest.raises(InvalidMessage, match="page 4 outside 1..3"):
        PageDecoded.from_dict({**ok, "page": 4})
    with pytest.raises(InvalidMessage, match="PageDecoded.failed: expected bool"):
        PageDecoded.from_dict({**ok, "failed": "yes"})
    with pytest.raises(InvalidMessage, match="missing field 'doc_id'"):
        DocumentSubmitted.from_dict({"job_id": "j"})
    # unknown fields from a later minor revision are ignored
    assert PageDecoded.from_dict({**ok, "future": 1}).page == 2


def test_config_from_env_and_errors():
    env = {
        "OCRSTREAM_DECODER_MAX_NEW_TOKENS": "77",
        "OCRSTREAM_INGEST_API_KEYS": "a, b,",
        "OCRSTREAM_ENCODER_MAX_BATCH": "3",
    }
    assert DecoderConfig.from_env(env).max_new_tokens == 77
    assert IngestConfig.from_env(env).api_keys == ("a", "b")
    assert WorkerConfig.for_service("encoder", env).max_batch == 3
    assert WorkerConfig.for_service("decoder", env).max_batch == WorkerConfig().max_batch
    with pytest.raises(ValueError, match="OCRSTREAM_DECODER_MAX_NEW_TOKENS='many'"):
        DecoderConfig.from_env({"OCRSTREAM_DECODER_MAX_NEW_TOKENS": "many"})
    names = [n for n, _, _ in env_table()]
    assert len(names) == len(set(names))  # every variable declared once
    assert "OCRSTREAM_KAFKA_BOOTSTRAP" in names and "OCRSTREAM_<SERVICE>_MAX_BATCH" in names


def test_memory_bus_groups_commit_and_keys():
    bus = MemoryBus(partitions=3)
    bus.ensure_topics(["t"])
    prod = bus.producer()
    for i in range(30):
        prod.publish("t", f"doc{i % 5}", str(i).encode())
    c = bus.consumer(["t"], "g")
    got = c.poll(100, 0)
    assert sorted(int(r.value) for r in got) == list(range(30))
    by_key = {}
    for r in got:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in by_key.values())  # a key stays on one partition
    c.commit()
    assert bus.consumer(["t"], "g").poll(100, 0) == []
    assert len(bus.consumer(["t"], "other").poll(100, 0)) == 30  # groups are independent
    prod.publish("t", "doc1", b"late")
    c2 = bus.consumer(["t"], "g")
    assert [r.value for r in c2.poll(10, 0)] == [b"late"]
    assert sum(c2.lag().values()) == 1  # polled, not committed


def test_memory_cache_lru_and_ttl():
    c = MemoryCache(max_bytes=30)
    c.set("a", b"x" * 10)
    c.set("b", b"y" * 10)
    c.set("c", b"z" * 10)
    assert c.get("a") == b"x" * 10  # a is now most recent
    c.set("d", b"w" * 10)  # evicts b, the least recently used
    assert c.get("b") is None and c.get("a") is not None and len(c) == 3
    c.set("e", b"v", ttl_s=0)
    assert c.get("e") is None
    c.set("f", b"v", ttl_s=60)
    assert c.get("f") == b"v"


def test_token_blob_pack():
    blob = pack_tokens(b"payload", 273)
    assert unpack_tokens(blob) == (273, b"payload")
    with pytest.raises(Exception, match="header"):
        unpack_tokens(b"payload")


def test_local_store(tmp_path):
    s = LocalStore(tmp_path)
    s.put("a/b/1.json", b"1")
    s.put("a/b/2.json", b"2")
    s.put("a/c", b"3")
    assert s.list("a/b/") == ["a/b/1.json", "a/b/2.json"] and s.list("a/") == [
        "a/b/1.json",
        "a/b/2.json",
        "a/c",
    ]
    assert s.get("a/c") == b"3" and s.exists("a/c") and not s.exists("a/d")
    with pytest.raises(NotFound, match="a/d"):
        s.get("a/d")
    with pytest.raises(ValueError, match="escapes"):
        s.put("../x", b"")


def test_trace_context_roundtrip_through_headers():
    provider = tracer_provider("t")
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("root") as root:
        headers = inject([("schema-version", b"1")])
    with tracer.start_as_current_span("child", context=extract(headers)) as child:
        pass
    assert child.context.trace_id == root.context.trace_id
    assert child.parent.span_id == root.context.span_id
    assert ("schema-version", b"1") in headers


def test_otlp_export_by_configuration():
    """OCRSTREAM_OTLP_ENDPOINT -> spans POSTed as OTLP/HTTP protobuf to <endpoint>/v1/traces."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    got = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        provider = tracer_provider("encoder", otlp_endpoint=f"http://127.0.0.1:{server.server_address[1]}")
        with provider.get_tracer("t").start_as_current_span("encode page 3"):
            pass
        provider.force_flush()
        provider.shutdown()
    finally:
        server.shutdown()
    assert [p for p, _ in got] == ["/v1/traces"]
    req = ExportTraceServiceRequest.FromString(got[0][1])
    (rs,) = req.resource_spans
    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
    assert resource["service.name"] == "ocrstream-encoder"
    assert [s.name for s in rs.scope_spans[0].spans] == ["encode page 3"]


def test_json_logs_carry_the_current_trace_id():
    import json
    import logging

    from ocrstream.telemetry import JsonLogFormatter

    tracer = tracer_provider("t").get_tracer("t")
    rec = logging.LogRecord("ocrstream.x", logging.INFO, __file__, 1, "page %d done", (3,), None)
    rec.doc_id = "d1"
    with tracer.start_as_current_span("decode page 3") as span:
        line = json.loads(JsonLogFormatter().format(rec))
    assert line["msg"] == "page 3 done" and line["doc_id"] == "d1"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "trace_id" not in json.loads(JsonLogFormatter().format(rec))


def test_docs_list_every_setting():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "pipeline.md").read_text()
    missing = [f"| `{n}` | `{d}` |" for n, d, _ in env_table() if f"| `{n}` | `{d}` |" not in doc]
    assert not missing, f"docs/pipeline.md settings table is stale: {missing}"
