"""A consumer's readiness follows its broker: it drops during an outage and returns after it.

Runs its own single-node KRaft broker (scripts/infra/kafka.sh with a private home and free ports)
so stopping it does not disturb the shared dev broker the other tests use.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ocrstream.bus.kafka import KafkaBus, create_topics

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout_s: float, poll) -> bool:  # noqa: ANN001
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        poll()
        if cond():
            return True
    return False


@pytest.fixture
def private_broker(kafka_bootstrap, tmp_path):  # noqa: ARG001 - the shared broker's fixture installs the jars
    env = dict(
        os.environ,
        OCRSTREAM_DEV_HOME=str(tmp_path / "dev"),
        OCRSTREAM_DEV_KAFKA_PORT=str(_free_port()),
        OCRSTREAM_DEV_KAFKA_CONTROLLER_PORT=str(_free_port()),
        OCRSTREAM_DEV_KAFKA_HEAP="256m",
    )

    def kafka(cmd: str) -> None:
        subprocess.run(["bash", str(REPO / "scripts/infra/kafka.sh"), cmd], env=env, check=True, timeout=240)

    kafka("start")
    try:
        yield f"127.0.0.1:{env['OCRSTREAM_DEV_KAFKA_PORT']}", kafka
    finally:
        kafka("stop")


def test_consumer_readiness_drops_during_a_broker_outage_and_returns(private_broker):
    bootstrap, kafka = private_broker
    bus = KafkaBus(bootstrap, client_id="outage-test")
    topic = f"outage-{os.urandom(4).hex()}"
    create_topics(bootstrap, {topic: 1}, replication=1)  # services only check; an admin step creates
    consumer = bus.consumer([topic], group=f"g-{os.urandom(4).hex()}")
    got: list[bytes] = []

    def poll() -> None:
        try:
            got.extend(r.value for r in consumer.poll(10, 0.5))
        except Exception:  # noqa: BLE001 - an outage may surface as an error; the worker retries too
            time.sleep(0.5)

    try:
        assert _wait(lambda: consumer.ready, 90, poll), "consumer never became ready"
        kafka("stop")
        assert _wait(lambda: not consumer.ready, 90, poll), "readiness stayed up with the broker down"
        kafka("start")
        assert _wait(lambda: consumer.ready, 120, poll), "readiness did not return with the broker"
        payload = os.urandom(32)
        producer = bus.producer()
        producer.publish(topic, "k", payload)
        producer.flush()
        producer.close()
        assert _wait(lambda: payload in got, 60, poll), "no record consumed after the outage"
    finally:
        consumer.close()
