"""Acceptance of the streaming pipeline against the real Kafka, Redis and MinIO (S3) services.

The stages run as real consumers (Worker threads here, or a separate decoder process for the kill
test) with a tiny random-weight model; documents go in through the ingestor, results are read
back from the bucket. A random model loops, so pages run the guard ladder and fall back to the
PDF text layer: the expected page text is known exactly.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ocrstream import layout
from ocrstream.bus.kafka import KafkaBus
from ocrstream.config import CommonConfig, DecoderConfig, EncoderConfig
from ocrstream.messages import DeadLetter, PageDecoded, topic
from ocrstream.pipeline.runner import STAGES, Pipeline
from ocrstream.services.wiring import build_cache
from ocrstream.store.s3 import S3Store
from tests.documents import empty_pdf, make_pdf, random_words
from tests.tiny import tiny_ocr_model

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.minio]

REPO = Path(__file__).resolve().parents[2]
DEC = DecoderConfig(max_new_tokens=16, ladder="t=0.0;t=0.7;mode=small")
ENV = {"OCRSTREAM_INGEST_DEFAULT_MODE": "tiny", "OCRSTREAM_RASTERIZER_MAX_PAGES": "5"}


@pytest.fixture
def rng():
    return random.Random(os.urandom(8))


@pytest.fixture(scope="module")
def model():
    return tiny_ocr_model(int.from_bytes(os.urandom(4), "little"))


def Cluster(common: CommonConfig, model, exporter=None, stages=STAGES) -> Pipeline:  # noqa: N802
    bus = KafkaBus(common.kafka_bootstrap)
    store = S3Store(common.s3_endpoint, common.s3_access_key, common.s3_secret_key, common.s3_bucket)
    cache = build_cache(common, EncoderConfig())  # as the encoder service does: checks the policy
    return Pipeline(
        model,
        bus,
        store,
        cache,
        common=common,
        runner="threads",
        stages=stages,
        env=ENV,
        decoder_cfg=DEC,
        exporter=exporter,
    ).start()


@pytest.fixture
def cluster_factory(dev_common):
    made = []

    def make(model, **kw):
        c = Cluster(dev_common, model, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()


def _docs(rng, n_docs, min_pages=1, max_pages=3):
    return [[random_words(rng, 3) for _ in range(rng.randint(min_pages, max_pages))] for _ in range(n_docs)]


def _sections(md: str) -> list[tuple[int, str]]:
    parts = re.split(r"<!-- page (\d+) -->", md)
    return [(int(parts[i]), parts[i + 1].strip()) for i in range(1, len(parts), 2)]


def _check_results(store, job_id, texts):
    res = json.loads(store.get(layout.result_key(job_id)))
    assert [p["page"] for p in res["pages"]] == list(range(1, len(texts) + 1))
    assert store.list(layout.page_result_prefix(job_id)) == [
        layout.page_result_key(job_id, p) for p in range(1, len(texts) + 1)
    ]
    md = store.get(layout.markdown_key(job_id)).decode()
    assert [n for n, _ in _sections(md)] == list(range(1, len(texts) + 1))
    for page, text in zip(res["pages"], texts, strict=True):
        if page["method"] == "text_layer":
            assert page["text"] == text
    return res


def test_pdfs_through_kafka_one_result_per_page(cluster_factory, model, rng):
    c = cluster_factory(model)
    docs = _docs(rng, 4)
    subs = [c.ingestor.submit(make_pdf(t), f"d{i}.pdf") for i, t in enumerate(docs)]
    states = c.wait([s.job_id for s in subs])
    assert set(states.values()) <= {"completed", "degraded"}
    for s, texts in zip(subs, docs, strict=True):
        _check_results(c.store, s.job_id, texts)
    # tokens in both tiers: Redis (TTL'd, LRU) and the bucket (durable)
    assert c.cache.policy() == "allkeys-lru"
    rec = json.loads(c.store.get(layout.encoded_key(subs[0].doc_id, "tiny", 1)))
    assert c.cache.get(rec["tokens_key"]) == c.store.get(rec["tokens_key"])


def test_redecode_new_prompt_zero_encoder_calls(cluster_factory, model, rng):
    c = cluster_factory(model)
    docs = _docs(rng, 2)
    subs = [c.ingestor.submit(make_pdf(t), f"d{i}.pdf") for i, t in enumerate(docs)]
    c.wait([s.job_id for s in subs])
    calls = c.encoder.encode_calls
    assert calls >= sum(len(t) for t in docs)
    re_subs = [c.ingestor.redecode(s.job_id, "markdown") for s in subs]
    c.wait([s.job_id for s in re_subs])
    assert c.encoder.encode_calls == calls  # counted: no encoder call for a new prompt
    for s, texts in zip(re_subs, docs, strict=True):
        res = _check_results(c.store, s.job_id, texts)
        assert all(p["prompt"] == "markdown" for p in res["pages"])


def test_one_trace_id_per_document_across_kafka_hops(cluster_factory, model, rng):
    exporter = InMemorySpanExporter()
    c = cluster_factory(model, exporter=exporter)
    docs = _docs(rng, 2, 2, 3)
    subs = [c.ingestor.submit(make_pdf(t), f"d{i}.pdf") for i, t in enumerate(docs)]
    c.wait([s.job_id for s in subs])
    time.sleep(0.5)  # the assembler span ends right after its publish
    spans = exporter.get_finished_spans()
    for s, texts in zip(subs, docs, strict=True):
        (root,) = [
            sp for sp in spans if sp.name == "document" and sp.attributes["ocrstream.job_id"] == s.job_id
        ]
        mine = {sp.name: sp for sp in spans if sp.context.trace_id == root.context.trace_id}
        for page in range(1, len(texts) + 1):
            for stage in ("encode", "decode", "assemble"):
                assert f"{stage} page {page}" in mine
            # the chain crosses three Kafka hops: assemble -> decode -> encode -> rasterize -> document
            sp = mine[f"assemble page {page}"]
            chain = []
            by_id = {x.context.span_id: x for x in spans}
            while sp is not None:
                chain.append(sp.name.split(" page")[0])
                sp = by_id.get(sp.parent.span_id) if sp.parent else None
            assert chain == ["assemble", "decode", "encode", "rasterize", "document"], chain


def test_bad_inputs_dead_lettered_and_others_served(cluster_factory, model, rng, kafka_group_id):
    c = cluster_factory(model)
    bad = {
        "corrupt": b"%PDF-1.4\n" + bytes(range(256)) * 4,
        "encrypted": make_pdf(["secret"], encrypt="pw"),
        "empty": empty_pdf(),
        "unsupported": b"GIF89a\x00\x00",
        "oversized": make_pdf(["p"] * 6),  # the rasterizer's page limit is 5 here
    }
    good = _docs(rng, 1)[0]
    subs = {k: c.ingestor.submit(v, f"{k}.pdf") for k, v in bad.items()}
    good_sub = c.ingestor.submit(make_pdf(good), "good.pdf")
    states = c.wait([s.job_id for s in subs.values()] + [good_sub.job_id])
    assert states[good_sub.job_id] in ("completed", "degraded")
    _check_results(c.store, good_sub.job_id, good)
    consumer = c.bus.consumer([topic(DeadLetter, c.common.topic_prefix)], kafka_group_id)
    dls = {}
    deadline = time.monotonic() + 30
    while len(dls) < len(bad) and time.monotonic() < deadline:
        for r in consumer.poll(50, 1.0):
            d = DeadLetter.from_bytes(r.value, r.headers)
            dls[d.job_id] = d
    consumer.close()
    for kind, s in subs.items():
        assert states[s.job_id] == "failed"
        assert (dls[s.job_id].reason, dls[s.job_id].stage) == (kind, "rasterize"), dls[s.job_id]
        assert c.ingestor.status(s.job_id)["reason"].startswith(kind)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


@pytest.mark.slow
def test_decoder_process_killed_mid_batch_then_restarted(cluster_factory, dev_common, model, rng, tmp_path):
    common = dev_common
    """A decoder process is SIGKILLed while decoding; the restarted one resumes from the last commit:
    no page lost, none duplicated in the results. Then SIGTERM: drain, commit, exit 0."""
    from ocrstream.model.weights import save_snapshot

    ckpt = tmp_path / "ckpt"
    save_snapshot(model.model, ckpt)
    model.tokenizer.tok.save(str(ckpt / "tokenizer.json"))
    c = cluster_factory(model, stages=("rasterizer", "encoder", "assembler"))
    port = _free_port()
    env = {
        **os.environ,
        "OCRSTREAM_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
        "OCRSTREAM_TOPIC_PREFIX": common.topic_prefix,
        "OCRSTREAM_REDIS_URL": common.redis_url,
        "OCRSTREAM_REDIS_KEY_PREFIX": common.redis_key_prefix,
        "OCRSTREAM_S3_ENDPOINT": common.s3_endpoint,
        "OCRSTREAM_S3_ACCESS_KEY": common.s3_access_key,
        "OCRSTREAM_S3_SECRET_KEY": common.s3_secret_key,
        "OCRSTREAM_S3_BUCKET": common.s3_bucket,
        "OCRSTREAM_CHECKPOINT_DIR": str(ckpt),
        "OCRSTREAM_DECODER_MAX_NEW_TOKENS": "96",  # long enough that a kill lands inside a batch
        "OCRSTREAM_DECODER_LADDER": "t=0.0;t=0.7",
        "OCRSTREAM_DECODER_MAX_BATCH": "2",
        "OCRSTREAM_DECODER_METRICS_PORT": str(port),
        "OCRSTREAM_DECODER_METRICS_HOST": "127.0.0.1",
        "OCRSTREAM_LOG_FORMAT": "json",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "ocrstream.services.decoder.main"]
    logf = open(tmp_path / "decoder.log", "ab")  # noqa: SIM115 - shared by both runs
    proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=tmp_path)
    docs = _docs(rng, 3, 2, 3)
    total = sum(len(t) for t in docs)
    subs = [c.ingestor.submit(make_pdf(t), f"d{i}.pdf") for i, t in enumerate(docs)]

    def pages_done():
        return sum(len(c.store.list(layout.page_result_prefix(s.job_id))) for s in subs)

    deadline = time.monotonic() + 180
    while pages_done() == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    done_at_kill = pages_done()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 0 < done_at_kill < total, (done_at_kill, total, (tmp_path / "decoder.log").read_text()[-3000:])

    proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        states = c.wait([s.job_id for s in subs], timeout_s=300)
        assert set(states.values()) <= {"completed", "degraded"}
        for s, texts in zip(subs, docs, strict=True):
            _check_results(c.store, s.job_id, texts)
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert _get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        code, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert code == 200 and b'ocrstream_pages_total{stage="decode"}' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0, (tmp_path / "decoder.log").read_text()[-3000:]
    decoded = []
    consumer = c.bus.consumer([topic(PageDecoded, common.topic_prefix)], f"audit-{os.urandom(4).hex()}")
    for _ in range(10):
        decoded += [PageDecoded.from_bytes(r.value, r.headers) for r in consumer.poll(500, 1.0)]
    consumer.close()
    assert {(d.job_id, d.page) for d in decoded} == {
        (s.job_id, p) for s, t in zip(subs, docs, strict=True) for p in range(1, len(t) + 1)
    }
