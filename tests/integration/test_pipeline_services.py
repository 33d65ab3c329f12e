"""Service processes as deployed (`python -m ocrstream.services.<name>.main`): probes, the ingest
HTTP API end to end into Kafka, SIGTERM -> drain and exit 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import httpx
import pytest

from ocrstream.bus.kafka import KafkaBus
from ocrstream.messages import DocumentSubmitted, PageRasterized, topic
from tests.documents import make_pdf

pytestmark = [pytest.mark.kafka, pytest.mark.minio]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout}s")


def _poll_all(bus, t, group, want, timeout=60.0):
    c = bus.consumer([t], group)
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += c.poll(100, 1.0)
    c.close()
    return got


def test_ingest_and_rasterizer_processes(
    kafka_bootstrap,
    minio_endpoint,
    minio_bucket,
    kafka_topic_prefix,
    kafka_group_id,
    pipeline_topics,
    tmp_path,
):
    api_port, health_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "OCRSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "OCRSTREAM_TOPIC_PREFIX": kafka_topic_prefix,
        "OCRSTREAM_S3_ENDPOINT": minio_endpoint.endpoint,
        "OCRSTREAM_S3_ACCESS_KEY": minio_endpoint.access_key,
        "OCRSTREAM_S3_SECRET_KEY": minio_endpoint.secret_key,
        "OCRSTREAM_S3_BUCKET": minio_bucket,
        "OCRSTREAM_INGEST_PORT": str(api_port),
        "OCRSTREAM_INGEST_API_KEYS": "secret-key",
        "OCRSTREAM_RASTERIZER_METRICS_PORT": str(health_port),
        "OCRSTREAM_RASTERIZER_METRICS_HOST": "127.0.0.1",
    }
    log = open(tmp_path / "services.log", "ab")  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", f"ocrstream.services.{s}.main"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for s in ("ingest", "rasterizer")
    ]
    try:
        assert _wait_http(f"http://127.0.0.1:{api_port}/healthz") == 200
        assert _wait_http(f"http://127.0.0.1:{health_port}/healthz") == 200
        pdf = make_pdf(["one", "two", "three"])
        r = httpx.post(
            f"http://127.0.0.1:{api_port}/v1/documents",
            files={"file": ("three.pdf", pdf, "application/pdf")},
            headers={"X-API-Key": "secret-key"},
            timeout=30,
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        bus = KafkaBus(kafka_bootstrap)
        (sub,) = _poll_all(bus, topic(DocumentSubmitted, kafka_topic_prefix), kafka_group_id + "-s", 1)
        assert DocumentSubmitted.from_bytes(sub.value, sub.headers).job_id == job_id
        pages = _poll_all(bus, topic(PageRasterized, kafka_topic_prefix), kafka_group_id + "-p", 3)
        assert sorted(PageRasterized.from_bytes(p.value).page for p in pages) == [1, 2, 3]
        st = httpx.get(
            f"http://127.0.0.1:{api_port}/v1/jobs/{job_id}", headers={"X-API-Key": "secret-key"}
        ).json()
        assert (st["status"], st["n_pages"]) == ("rasterized", 3)
        m = httpx.get(f"http://127.0.0.1:{health_port}/metrics").text
        assert 'ocrstream_pages_total{stage="rasterize"} 1.0' in m
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        rcs = [p.wait(timeout=60) for p in procs]
    assert rcs == [0, 0], (tmp_path / "services.log").read_text()[-3000:]
