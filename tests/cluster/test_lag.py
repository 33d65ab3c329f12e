"""Consumer lag: the arithmetic on its own, then against the real Kafka broker."""

from __future__ import annotations

import random
import uuid

import pytest

from ocrstream.cluster.lag import LagError, compute_lag, group_lag


def test_compute_lag() -> None:
    end = {("t", 0): 10, ("t", 1): 7, ("t", 2): 5}
    committed = {("t", 0): 4, ("t", 1): -1}  # partition 1 never committed, 2 absent
    earliest = {("t", 0): 0, ("t", 1): 2, ("t", 2): 1}
    r = compute_lag(end, committed, earliest)
    assert [p["lag"] for p in r["partitions"]] == [6, 5, 4]
    assert (r["total"], r["uncommitted"], r["max_partition_lag"]) == (15, 2, 6)


def test_compute_lag_never_negative() -> None:
    # A committed offset past the end (topic recreated) must not hide other partitions' lag.
    r = compute_lag({("t", 0): 3, ("t", 1): 9}, {("t", 0): 8, ("t", 1): 1}, {})
    assert [p["lag"] for p in r["partitions"]] == [0, 8] and r["total"] == 8


def test_unreachable_broker_raises_with_context() -> None:
    with pytest.raises(LagError) as exc:
        group_lag("127.0.0.1:1", "ocrstream-encoder", ["ocrstream.pages.rasterized"], timeout_ms=1000)
    assert "127.0.0.1:1" in str(exc.value)


@pytest.mark.kafka
def test_group_lag_against_kafka(kafka_bootstrap: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.structs import OffsetAndMetadata

    topic, group = f"lagtest-{uuid.uuid4().hex[:10]}", f"lagtest-{uuid.uuid4().hex[:10]}"
    partitions = random.randint(2, 4)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
        produced = [random.randint(1, 12) for _ in range(partitions)]
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for p, n in enumerate(produced):
            for i in range(n):
                producer.send(topic, f"m{i}".encode(), partition=p)
        producer.flush()
        producer.close()

        # Nothing committed yet: everything is lag.
        r = group_lag(kafka_bootstrap, group, [topic])
        assert r["total"] == sum(produced) and r["uncommitted"] == partitions

        # Commit part of partition 0 and all of partition 1.
        done0 = random.randint(0, produced[0])
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
        consumer.commit(
            {
                TopicPartition(topic, 0): OffsetAndMetadata(done0, "", -1),
                TopicPartition(topic, 1): OffsetAndMetadata(produced[1], "", -1),
            }
        )
        consumer.close()
        r = group_lag(kafka_bootstrap, group, [topic])
        by_partition = {p["partition"]: p for p in r["partitions"]}
        assert by_partition[0]["lag"] == produced[0] - done0
        assert by_partition[1]["lag"] == 0
        assert r["total"] == sum(produced) - done0 - produced[1]
        assert r["uncommitted"] == partitions - 2
        assert [by_partition[p]["end"] for p in range(partitions)] == produced
    finally:
        admin.delete_topics([topic])
        admin.close()
