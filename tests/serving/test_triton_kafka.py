"""The Kafka-wired services with ``OCRSTREAM_DECODER_BACKEND=triton``: pages flow through real
Kafka topics, the decoder stage calls the sharded Triton decoder, and the page texts equal the
in-process decoder's (embedded pipeline, in-memory bus) on a tiny random model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ocrstream import layout
from ocrstream.bus.kafka import KafkaBus, create_topics
from ocrstream.model.runtime import OcrModel
from ocrstream.pipeline.runner import Pipeline
from ocrstream.services.wiring import all_topics
from ocrstream.serving.repo import write_repository
from tests.serving.test_triton_pipeline import _noise_tiff

pytestmark = [pytest.mark.triton, pytest.mark.kafka]


def _pages(summary: dict) -> list[tuple]:
    result = json.loads(Path(summary["json"]).read_text())
    return [(p["page"], p["text"], p["method"]) for p in result["pages"]]


def test_kafka_services_with_triton_decoder(
    triton, writing_snapshot, kafka_bootstrap, kafka_topic_prefix, tmp_path, monkeypatch
):
    folder, _ = writing_snapshot
    names = write_repository(
        triton.model_repo, str(folder), 2, decoder="dec_kafka", shard_prefix="shard_kafka"
    )
    triton.load(names)
    try:
        model = OcrModel.load(folder)
        doc = tmp_path / "scan.tiff"
        doc.write_bytes(_noise_tiff(2))
        monkeypatch.setenv("OCRSTREAM_DECODER_TRITON_MODEL", "dec_kafka")
        base = {
            "OCRSTREAM_INGEST_DEFAULT_MODE": "tiny",
            "OCRSTREAM_DECODER_MAX_NEW_TOKENS": "12",
            "OCRSTREAM_DECODER_LADDER": "t=0.0",
            "OCRSTREAM_TOPIC_PREFIX": kafka_topic_prefix,
        }
        ref = Pipeline.embedded(tmp_path / "store-ref", model, env=base).run([doc], tmp_path / "out-ref")

        env = {**base, "OCRSTREAM_DECODER_BACKEND": "triton", "OCRSTREAM_DECODER_TRITON_URL": triton.grpc_url}
        bus = KafkaBus(kafka_bootstrap, client_id="test-triton-kafka")
        create_topics(kafka_bootstrap, dict.fromkeys(all_topics(kafka_topic_prefix), 1), replication=1)
        pipe = Pipeline.embedded(tmp_path / "store-kafka", model, env=env, bus=bus)
        [sub] = pipe.submit_paths([doc])
        deadline = time.monotonic() + 300
        while pipe.ingestor.jobs.get(sub.job_id)["status"] not in layout.TERMINAL:
            assert time.monotonic() < deadline, pipe.ingestor.jobs.get(sub.job_id)
            for w in pipe.workers.values():
                w.run_once(0.2)
        got = pipe.export(sub.job_id, tmp_path / "out-kafka")
        assert len(_pages(got)) == 2
        assert all(p[1] for p in _pages(got))  # the model wrote something on every page
        assert _pages(got) == _pages(ref[0])
        stats = triton.client.get_inference_statistics("dec_kafka", as_json=True)["model_stats"][0]
        assert int(stats["inference_stats"]["success"]["count"]) >= 2  # the pages went through Triton
    finally:
        triton.unload(names)
