"""Topics are an admin step (`ocrstream topics create`, the chart's Job) with configured partitions
and replication; a service only checks for its topics and stays unready, saying why, until they exist."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from kafka import KafkaAdminClient

from ocrstream.cli import main as cli
from ocrstream.config import TopicsConfig
from ocrstream.messages import MESSAGE_TYPES

pytestmark = pytest.mark.kafka
SUFFIXES = tuple(t.TOPIC for t in MESSAGE_TYPES)


@pytest.fixture
def admin(kafka_bootstrap, kafka_topic_prefix):
    a = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="test-topics-admin")
    yield a
    mine = [t for t in a.list_topics() if t.startswith(kafka_topic_prefix)]
    if mine:
        a.delete_topics(mine)
    a.close()


def _partitions(admin, prefix) -> dict[str, int]:
    names = [t for t in admin.list_topics() if t.startswith(prefix)]
    return (
        {d["name"][len(prefix) :]: len(d["partitions"]) for d in admin.describe_topics(names)}
        if names
        else {}
    )


def test_layout_from_config_and_its_errors():
    cfg = TopicsConfig.from_env(
        {
            "OCRSTREAM_TOPICS_PARTITIONS": "3",
            "OCRSTREAM_TOPICS_PARTITIONS_BY_TOPIC": "page.encoded=12, x.page.decoded=5",
        }
    )
    layout = cfg.layout("x.", SUFFIXES)
    assert layout == {f"x.{s}": {"page.encoded": 12, "page.decoded": 5}.get(s, 3) for s in SUFFIXES}
    for bad in ("page.encode=3", "page.encoded", "page.encoded=0", "page.encoded=two"):
        with pytest.raises(ValueError, match="PARTITIONS_BY_TOPIC"):
            TopicsConfig.from_env({"OCRSTREAM_TOPICS_PARTITIONS_BY_TOPIC": bad}).layout("x.", SUFFIXES)
    with pytest.raises(ValueError, match="REPLICATION_FACTOR"):
        TopicsConfig.from_env({"OCRSTREAM_TOPICS_REPLICATION_FACTOR": "0"}).layout("x.", SUFFIXES)


def test_topics_create_applies_partitions_grows_and_never_shrinks(
    kafka_bootstrap, kafka_topic_prefix, admin, monkeypatch, capsys
):
    rng = random.Random(os.urandom(8))
    per = {s: rng.randint(1, 4) for s in rng.sample(SUFFIXES, 3)}
    default = rng.randint(1, 3)
    monkeypatch.setenv("OCRSTREAM_KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("OCRSTREAM_TOPIC_PREFIX", kafka_topic_prefix)
    monkeypatch.setenv("OCRSTREAM_TOPICS_PARTITIONS", str(default))
    monkeypatch.setenv("OCRSTREAM_TOPICS_PARTITIONS_BY_TOPIC", ",".join(f"{k}={v}" for k, v in per.items()))
    assert cli(["topics", "check"]) == 1
    assert "missing topics" in capsys.readouterr().err
    assert cli(["topics", "create"]) == 0
    want = {s: per.get(s, default) for s in SUFFIXES}
    assert _partitions(admin, kafka_topic_prefix) == want
    assert capsys.readouterr().out.count("\tcreated") == len(SUFFIXES)
    assert cli(["topics", "create"]) == 0  # idempotent
    assert capsys.readouterr().out.count("\tok") == len(SUFFIXES)
    grown = rng.choice(SUFFIXES)
    assert cli(["topics", "create", "--topic-partitions", f"{grown}={want[grown] + 2}"]) == 0
    assert "grown" in capsys.readouterr().out
    want[grown] += 2
    assert _partitions(admin, kafka_topic_prefix) == want
    assert cli(["topics", "create", "--partitions", "1"]) == 0  # fewer asked: Kafka cannot shrink
    assert _partitions(admin, kafka_topic_prefix) == want
    assert cli(["topics", "check"]) == 0
    # Replication is the configured one (1 on the single dev broker; more than brokers fails clearly).
    desc = admin.describe_topics([kafka_topic_prefix + SUFFIXES[0]])[0]
    assert all(len(p["replica_nodes"]) == 1 for p in desc["partitions"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def _until(fn, timeout_s: float):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.25)
    return fn()


@pytest.mark.minio
def test_service_checks_topics_never_creates_them_and_is_unready_until_they_exist(
    kafka_bootstrap, kafka_topic_prefix, minio_endpoint, minio_bucket, admin, tmp_path
):
    port = _free_port()
    env = {
        **os.environ,
        "OCRSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "OCRSTREAM_TOPIC_PREFIX": kafka_topic_prefix,
        "OCRSTREAM_S3_ENDPOINT": minio_endpoint.endpoint,
        "OCRSTREAM_S3_ACCESS_KEY": minio_endpoint.access_key,
        "OCRSTREAM_S3_SECRET_KEY": minio_endpoint.secret_key,
        "OCRSTREAM_S3_BUCKET": minio_bucket,
        "OCRSTREAM_RASTERIZER_METRICS_PORT": str(port),
        "OCRSTREAM_RASTERIZER_METRICS_HOST": "127.0.0.1",
        "OCRSTREAM_TOPICS_CHECK_INTERVAL_S": "0.5",
        "OCRSTREAM_LOG_FORMAT": "text",
    }
    log = open(tmp_path / "rasterizer.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocrstream.services.rasterizer.main"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert _until(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 90), (
            tmp_path / "rasterizer.log"
        ).read_text()
        code, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert (
            code == 503
            and "missing Kafka topics" in body
            and f"{kafka_topic_prefix}document.submitted" in body
        )
        assert "ocrstream topics create" in body
        time.sleep(2.0)  # several check rounds
        assert _partitions(admin, kafka_topic_prefix) == {}, "the service created topics"
        assert proc.poll() is None
        subprocess.run(
            [sys.executable, "-m", "ocrstream", "topics", "create", "--partitions", "2"],
            env=env,
            check=True,
            capture_output=True,
        )
        assert _until(lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 90), _get(
            f"http://127.0.0.1:{port}/readyz"
        )
        assert set(_partitions(admin, kafka_topic_prefix).values()) == {2}
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0, (tmp_path / "rasterizer.log").read_text()[-3000:]


def test_the_bus_never_creates_a_topic_implicitly(kafka_bootstrap, kafka_topic_prefix, kafka_group_id, admin):
    """The dev broker auto-creates topics on request; the bus's clients never ask it to."""
    from ocrstream.bus.kafka import KafkaBus

    bus = KafkaBus(kafka_bootstrap, client_id="test-no-autocreate")
    missing = f"{kafka_topic_prefix}page.encoded"
    consumer = bus.consumer([missing], kafka_group_id)
    try:
        for _ in range(4):
            assert consumer.poll(10, 0.5) == []
    finally:
        consumer.close()
    assert bus.missing_topics([missing]) == [missing]
    assert _partitions(admin, kafka_topic_prefix) == {}


def test_ingest_serves_its_api_unready_until_the_topics_exist(
    kafka_bootstrap, kafka_topic_prefix, admin, tmp_path
):
    port = _free_port()
    env = {
        **os.environ,
        "OCRSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "OCRSTREAM_TOPIC_PREFIX": kafka_topic_prefix,
        "OCRSTREAM_STORE": "local",
        "OCRSTREAM_STORE_DIR": str(tmp_path / "store"),
        "OCRSTREAM_CACHE": "memory",
        "OCRSTREAM_INGEST_PORT": str(port),
        "OCRSTREAM_INGEST_API_KEYS": os.urandom(12).hex(),
        "OCRSTREAM_INGEST_CONTEXT_API": "false",
        "OCRSTREAM_TOPICS_CHECK_INTERVAL_S": "0.5",
    }
    log = open(tmp_path / "ingest.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocrstream.services.ingest.main"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert _until(lambda: _get(f"{url}/healthz")[0] == 200, 90), (tmp_path / "ingest.log").read_text()
        code, body = _get(f"{url}/readyz")
        assert code == 503 and "missing Kafka topics" in body and f"{kafka_topic_prefix}document.refs" in body
        time.sleep(1.5)
        assert _partitions(admin, kafka_topic_prefix) == {}, "ingest created topics"
        subprocess.run(
            [sys.executable, "-m", "ocrstream", "topics", "create", "--partitions", "1"],
            env=env,
            check=True,
            capture_output=True,
        )
        assert _until(lambda: _get(f"{url}/readyz")[0] == 200, 60), _get(f"{url}/readyz")
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0, (tmp_path / "ingest.log").read_text()[-3000:]
