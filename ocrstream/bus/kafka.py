"""Kafka bus over kafka-python: manual commits, keyed records, headers, topic set-up.

Every kafka-python error is mapped to ``BusUnavailable`` here, chained, so services only see the
ocrstream exception tree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ocrstream.bus.base import Headers, Record
from ocrstream.errors import BusUnavailable

log = logging.getLogger(__name__)

READY_WINDOW_S = 30.0


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except KafkaError as exc:
        raise BusUnavailable(f"kafka {what} failed: {exc!r}") from exc


class KafkaBus:
    def __init__(self, bootstrap: str, client_id: str = "ocrstream") -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id

    def producer(self) -> KafkaBusProducer:
        return KafkaBusProducer(self.bootstrap, self.client_id)

    def consumer(self, topics: list[str], group: str) -> KafkaBusConsumer:
        return KafkaBusConsumer(self.bootstrap, topics, group, self.client_id)

    def ensure_topics(self, topics: list[str], partitions: int = 1, replication: int = 1) -> None:
        """Create missing topics (idempotent): the topic/partition set-up helper."""
        with _mapped("topic set-up"):
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
            try:
                existing = set(admin.list_topics())
                new = [NewTopic(t, partitions, replication) for t in topics if t not in existing]
                if new:
                    with suppress(TopicAlreadyExistsError):  # created concurrently by another service
                        admin.create_topics(new)
                    log.info("created topics %s", [t.name for t in new])
            finally:
                admin.close()


class KafkaBusProducer:
    def __init__(self, bootstrap: str, client_id: str) -> None:
        with _mapped("producer connect"):
            # acks=all + idempotence: a retried send does not duplicate within a producer session.
            self._p = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id=client_id,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                max_request_size=8 * 1024 * 1024,
            )

    def publish(self, topic: str, key: str, value: bytes, headers: Headers | None = None) -> None:
        with _mapped(f"send to {topic}"):
            self._p.send(topic, key=key.encode(), value=value, headers=list(headers or []))

    def flush(self) -> None:
        with _mapped("flush"):
            self._p.flush(timeout=30)

    def close(self) -> None:
        with _mapped("producer close"):
            self._p.close(timeout=10)


class KafkaBusConsumer:
    def __init__(self, bootstrap: str, topics: list[str], group: str, client_id: str) -> None:
        with _mapped("consumer connect"):
            self._c = KafkaConsumer(
                *topics,
                bootstrap_servers=bootstrap,
                group_id=group,
                client_id=client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_interval_ms=600_000,  # a CPU decode batch can take minutes
            )
        self._last_ok = float("-inf")

    @property
    def ready(self) -> bool:
        # Ready while the group coordinator is known and connected: then the consumer either has
        # partitions or is idle by design (more replicas than partitions). During a broker outage
        # the client drops the coordinator, and readiness drops with it until it rejoins.
        coord = getattr(self._c, "_coordinator", None)
        client = getattr(self._c, "_client", None)
        if coord is None or client is None:  # a kafka-python without these: poll recency only
            return time.monotonic() - self._last_ok < READY_WINDOW_S
        node = coord.coordinator_id  # read without coordinator()'s side effect (probe thread)
        return node is not None and not client.is_disconnected(node)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        with _mapped("poll"):
            batches = self._c.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        self._last_ok = time.monotonic()
        out = []
        for recs in batches.values():
            for r in recs:
                key = r.key.decode() if r.key else ""
                out.append(Record(r.topic, r.partition, r.offset, key, r.value, list(r.headers or [])))
        return out

    def commit(self) -> None:
        with _mapped("commit"):
            self._c.commit()

    def lag(self) -> dict[tuple[str, int], int]:
        with _mapped("lag"):
            parts = list(self._c.assignment())
            if not parts:
                return {}
            ends = self._c.end_offsets(parts)
            return {(tp.topic, tp.partition): max(0, ends[tp] - self._c.position(tp)) for tp in parts}

    def close(self) -> None:
        with _mapped("consumer close"):
            self._c.close(autocommit=False)


__all__ = ["KafkaBus", "TopicPartition"]
