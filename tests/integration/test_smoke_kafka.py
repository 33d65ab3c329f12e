"""Smoke: the dev Kafka broker auto-creates a topic and round-trips a record (kafka-python)."""

import os

import pytest
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.kafka


def test_kafka_produce_consume_roundtrip(kafka_bootstrap, kafka_topic_prefix, kafka_group_id):
    topic = f"{kafka_topic_prefix}smoke"
    key, payload = os.urandom(8), os.urandom(256)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        meta = producer.send(topic, key=key, value=payload).get(timeout=60)
    finally:
        producer.close()
    assert meta.topic == topic

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=kafka_group_id,
        auto_offset_reset="earliest",
        consumer_timeout_ms=60_000,
    )
    try:
        record = next(iter(consumer), None)
    finally:
        consumer.close()
    assert record is not None, f"no record on {topic} within 60 s"
    assert (record.key, record.value) == (key, payload)
    assert (record.partition, record.offset) == (meta.partition, meta.offset)
