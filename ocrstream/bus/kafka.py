"""Kafka bus over kafka-python: manual commits, keyed records, headers, topic checks.

Services never create topics: partitions bound each consumer group's parallelism and the
replication factor is the cluster's durability, so both are set once by the chart's topics Job or
``ocrstream topics create`` (``create_topics`` here). A service only checks that its topics exist
(``missing_topics`` / ``ensure_topics``) and stays unready until they do.

Every kafka-python error is mapped to ``BusUnavailable`` here, chained, so services only see the
ocrstream exception tree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions, NewTopic
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

    def missing_topics(self, topics: list[str]) -> list[str]:
        """The topics of ``topics`` the cluster does not have (a metadata read; creates nothing)."""
        with _mapped("topic check"):
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=self.client_id)
            try:
                existing = set(admin.list_topics())
            finally:
                admin.close()
        return [t for t in topics if t not in existing]

    def ensure_topics(self, topics: list[str], partitions: int = 1) -> None:
        """Check that ``topics`` exist; raise MissingTopics naming them. Never creates: see
        ``create_topics`` (``partitions`` is the Bus protocol's; the in-memory bus uses it)."""
        missing = self.missing_topics(topics)
        if missing:
            raise MissingTopics(missing, self.bootstrap)


class MissingTopics(BusUnavailable):
    """Topics the service needs are not there: a deployment step was skipped, not an outage."""

    reason = "missing_topics"

    def __init__(self, missing: list[str], bootstrap: str) -> None:
        self.missing = list(missing)
        super().__init__(
            f"kafka at {bootstrap} lacks the topics {', '.join(self.missing)}; services do not create "
            "topics: run `ocrstream topics create` (or the Helm chart's topics Job) with the "
            "cluster's partitions and replication factor"
        )


def _wait_partitions(admin: KafkaAdminClient, want: dict[str, int], timeout_s: float) -> None:
    """Until the cluster's metadata shows the new partition counts (the call returns before)."""
    deadline = time.monotonic() + timeout_s
    while True:
        have = {d["name"]: len(d["partitions"]) for d in admin.describe_topics(list(want))}
        if all(have.get(t, 0) >= n for t, n in want.items()) or time.monotonic() >= deadline:
            return
        time.sleep(0.2)


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: int  # after the call
    replication: int
    action: str  # created | grown | ok | more (has more partitions than asked: Kafka cannot shrink)


def create_topics(
    bootstrap: str,
    partitions: Mapping[str, int],
    replication: int,
    client_id: str = "ocrstream-topics",
    timeout_s: float = 30.0,
) -> list[TopicState]:
    """Create missing topics with their partition counts and ``replication``, grow existing ones
    that have fewer partitions (never shrink); idempotent. A replication factor below the asked
    one on an existing topic is reported (logged), not changed: that needs a reassignment."""
    bad = {t: n for t, n in partitions.items() if n < 1}
    if bad or replication < 1:
        raise ValueError(f"partitions must be >= 1 (got {bad}) and replication >= 1 (got {replication})")
    timeout_ms = int(timeout_s * 1000)
    with _mapped("topic set-up"):
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=timeout_ms
        )
        try:
            existing = set(admin.list_topics())
            new = [NewTopic(t, n, replication) for t, n in partitions.items() if t not in existing]
            if new:
                with suppress(TopicAlreadyExistsError):  # created concurrently (another admin run)
                    admin.create_topics(new, timeout_ms=timeout_ms, wait_for_metadata=True)
            have = {d["name"]: d for d in admin.describe_topics(list(partitions))}
            grow = {}
            out = []
            for t, n in partitions.items():
                parts = have.get(t, {}).get("partitions", [])
                rf = min((len(p.get("replica_nodes", [])) for p in parts), default=replication)
                if t not in existing and len(parts) >= n:
                    action = "created"
                elif len(parts) < n:  # fewer than asked, or created concurrently with fewer
                    grow[t] = NewPartitions(n)
                    action = "grown"
                else:
                    action = "ok" if len(parts) == n else "more"
                if rf < replication:
                    log.warning(
                        "topic %s has replication factor %d < %d: reassign it to change", t, rf, replication
                    )
                out.append(TopicState(t, max(n, len(parts)), rf, action))
            if grow:
                admin.create_partitions(grow, timeout_ms=timeout_ms)
                _wait_partitions(admin, {t: np.total_count for t, np in grow.items()}, timeout_s)
        finally:
            admin.close()
    for st in out:
        if st.action != "ok":
            log.info(
                "topic %s: %s (%d partitions, replication %d)",
                st.name,
                st.action,
                st.partitions,
                st.replication,
            )
    return out


def _no_auto_create(cluster: object) -> None:
    """kafka-python 3.0.12 does not pass ``allow_auto_create_topics`` on to the ClusterMetadata that
    builds its metadata requests, so a consumer subscribing to (or a producer sending to) a missing
    topic still asks the broker to create it; set it there (tests/integration/test_topics_admin.py
    checks that no topic appears)."""
    cfg = getattr(cluster, "config", None)
    if isinstance(cfg, dict) and "allow_auto_create_topics" in cfg:
        cfg["allow_auto_create_topics"] = False


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
                # Never create a topic implicitly, even on a broker that allows it (the dev one).
                allow_auto_create_topics=False,
            )
            _no_auto_create(getattr(self._p, "_metadata", None))

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
                bootstrap_servers=bootstrap,
                group_id=group,
                client_id=client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_interval_ms=600_000,  # a CPU decode batch can take minutes
                # A replica that dies without leaving (SIGKILL, OOM, lost node) holds its partitions
                # until its session expires, and the rebalance its replacement starts halts the whole
                # group until then: 10 s, not kafka-python's 45 s (bench/faults.py measured the stall).
                # Heartbeats come from a background thread, so long batches do not expire it.
                session_timeout_ms=10_000,
                heartbeat_interval_ms=3_000,
                allow_auto_create_topics=False,
            )
            # Subscribed only once the metadata client refuses to create topics.
            _no_auto_create(getattr(getattr(self._c, "_client", None), "cluster", None))
            self._c.subscribe(topics)
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


__all__ = ["KafkaBus", "MissingTopics", "TopicPartition", "TopicState", "create_topics"]
