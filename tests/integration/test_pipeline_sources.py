"""Ingest sources and the command line against the real MinIO, Kafka and Redis."""

from __future__ import annotations

import io
import json
import os
import random

import pytest

from ocrstream.bus.kafka import KafkaBus
from ocrstream.config import CommonConfig, DecoderConfig, EncoderConfig
from ocrstream.messages import DocumentSubmitted, topic
from ocrstream.pipeline.runner import Pipeline
from ocrstream.services.ingest.handler import Ingestor
from ocrstream.services.ingest.sources import BucketSource
from ocrstream.services.runtime import publish_messages
from ocrstream.services.wiring import build_cache
from ocrstream.store.s3 import S3Store
from ocrstream.telemetry import Telemetry
from tests.documents import make_pdf, random_words
from tests.tiny import tiny_ocr_model


@pytest.fixture
def rng():
    return random.Random(os.urandom(8))


@pytest.mark.minio
@pytest.mark.kafka
def test_bucket_source_submits_each_object_once(
    minio_endpoint,
    minio_client,
    minio_bucket,
    kafka_bootstrap,
    kafka_topic_prefix,
    kafka_group_id,
    pipeline_topics,
    rng,
):
    store = S3Store(
        minio_endpoint.endpoint, minio_endpoint.access_key, minio_endpoint.secret_key, minio_bucket
    )
    bus = KafkaBus(kafka_bootstrap)
    prod = bus.producer()
    ing = Ingestor(
        store, lambda m, s: publish_messages(prod, kafka_topic_prefix, m, s), Telemetry("t"), flush=prod.flush
    )
    pdfs = [make_pdf([random_words(rng, 2)]) for _ in range(3)]
    for i, data in enumerate(pdfs):
        minio_client.put_object(minio_bucket, f"inbox/d{i}.pdf", io.BytesIO(data), len(data))
    minio_client.put_object(minio_bucket, "elsewhere/x.pdf", io.BytesIO(pdfs[0]), len(pdfs[0]))
    src = BucketSource(store.client, minio_bucket, "inbox/", ing, store)
    assert src.scan() == 3
    assert src.scan() == 0  # tracked by etag
    minio_client.put_object(minio_bucket, "inbox/new.pdf", io.BytesIO(b"%PDF-new"), 8)
    assert src.scan() == 1
    consumer = bus.consumer([topic(DocumentSubmitted, kafka_topic_prefix)], kafka_group_id)
    got = []
    for _ in range(20):
        got += [DocumentSubmitted.from_bytes(r.value, r.headers) for r in consumer.poll(50, 1.0)]
        if len(got) >= 4:
            break
    consumer.close()
    prod.close()
    assert sorted(m.filename for m in got) == [
        "inbox/d0.pdf",
        "inbox/d1.pdf",
        "inbox/d2.pdf",
        "inbox/new.pdf",
    ]


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.minio
def test_cli_submit_status_results_redecode(
    kafka_bootstrap,
    redis_url,
    minio_endpoint,
    minio_bucket,
    kafka_topic_prefix,
    redis_key_prefix,
    pipeline_topics,
    rng,
    tmp_path,
    monkeypatch,
    capsys,
):
    from ocrstream.cli import main

    env = {
        "OCRSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "OCRSTREAM_TOPIC_PREFIX": kafka_topic_prefix,
        "OCRSTREAM_REDIS_URL": redis_url,
        "OCRSTREAM_REDIS_KEY_PREFIX": redis_key_prefix,
        "OCRSTREAM_S3_ENDPOINT": minio_endpoint.endpoint,
        "OCRSTREAM_S3_ACCESS_KEY": minio_endpoint.access_key,
        "OCRSTREAM_S3_SECRET_KEY": minio_endpoint.secret_key,
        "OCRSTREAM_S3_BUCKET": minio_bucket,
        "OCRSTREAM_INGEST_DEFAULT_MODE": "tiny",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    common = CommonConfig.from_env()
    store = S3Store(common.s3_endpoint, common.s3_access_key, common.s3_secret_key, common.s3_bucket)
    pipe = Pipeline(
        tiny_ocr_model(),
        KafkaBus(kafka_bootstrap),
        store,
        build_cache(common, EncoderConfig()),
        common=common,
        runner="threads",
        env=env,
        decoder_cfg=DecoderConfig(max_new_tokens=12, ladder="t=0.0"),
    ).start()
    try:
        texts = [random_words(rng, 3) for _ in range(2)]
        (tmp_path / "doc.pdf").write_bytes(make_pdf(texts))
        assert main(["submit", str(tmp_path / "doc.pdf"), "--wait"]) == 0
        job_id = capsys.readouterr().out.split()[0]
        assert main(["status", job_id]) == 0
        st = json.loads(capsys.readouterr().out)
        assert (st["status"] in ("completed", "degraded"), st["n_pages"], st["pages_done"]) == (True, 2, 2)
        assert main(["results", job_id]) == 0
        md = capsys.readouterr().out
        assert md.count("<!-- page ") == 2
        assert main(["results", job_id, "--format", "json", "-o", str(tmp_path / "r.json")]) == 0
        assert [p["page"] for p in json.loads((tmp_path / "r.json").read_text())["pages"]] == [1, 2]
        calls = pipe.encoder.encode_calls
        assert main(["redecode", job_id, "--prompt", "markdown", "--wait"]) == 0
        new_job = capsys.readouterr().out.split()[0]
        assert new_job != job_id and pipe.ingestor.status(new_job)["prompt"] == "markdown"
        assert pipe.encoder.encode_calls == calls
    finally:
        pipe.stop()
