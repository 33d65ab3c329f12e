"""Consumer-group lag: per partition, the log-end offset minus the group's committed offset.

A partition the group has never committed counts from the earliest offset still in the log (what a
consumer with auto.offset.reset=earliest, as the chart's KEDA triggers assume, would have to read).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


class LagError(RuntimeError):
    """Lag could not be read (broker unreachable, unknown topic...)."""


def _admin(bootstrap: str, timeout_ms: int) -> Any:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=bootstrap.split(","),
        client_id="ocrstream-cluster-status",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )


def _topic_partitions(admin: Any, topics: Iterable[str]) -> list[Any]:
    from kafka import TopicPartition

    out = []
    for meta in admin.describe_topics(list(topics)):
        name = meta.get("topic") or meta.get("name")
        if meta.get("error_code", 0):
            raise LagError(f"topic {name!r}: broker error code {meta['error_code']}")
        out += [
            TopicPartition(name, p["partition_index"] if "partition_index" in p else p["partition"])
            for p in meta["partitions"]
        ]
    return out


def compute_lag(
    end_offsets: dict[tuple[str, int], int],
    committed: dict[tuple[str, int], int],
    earliest: dict[tuple[str, int], int],
) -> dict[str, Any]:
    """Lag from offsets keyed by (topic, partition); committed < 0 or absent means never committed."""
    partitions = []
    for key in sorted(end_offsets):
        end = end_offsets[key]
        done = committed.get(key, -1)
        start = done if done >= 0 else earliest.get(key, 0)
        partitions.append(
            {"topic": key[0], "partition": key[1], "end": end, "committed": done, "lag": max(0, end - start)}
        )
    return {
        "total": sum(p["lag"] for p in partitions),
        "partitions": partitions,
        "uncommitted": sum(1 for p in partitions if p["committed"] < 0),
        "max_partition_lag": max((p["lag"] for p in partitions), default=0),
    }


def group_lag(
    bootstrap: str, group: str, topics: Iterable[str], *, timeout_ms: int = 10_000
) -> dict[str, Any]:
    """Lag of `group` on `topics` as {"group", "total", "partitions": [...], "uncommitted", ...}.

    Raises LagError with the bootstrap, group and cause when Kafka cannot answer.
    """
    from kafka.errors import KafkaError
    from kafka.protocol.consumer.offsets import OffsetSpec

    topics = list(topics)
    try:
        admin = _admin(bootstrap, timeout_ms)
    except KafkaError as exc:
        raise LagError(f"kafka at {bootstrap}: {exc}") from exc
    # A fresh broker answers CoordinatorNotAvailable until its offsets topic exists: retriable
    # errors are retried until the timeout, everything else is reported at once.
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        while True:
            try:
                tps = _topic_partitions(admin, topics)
                if not tps:
                    raise LagError(f"topics {topics} have no partitions at {bootstrap}")
                committed_raw = admin.list_group_offsets({group: tps}).get(group, {})
                latest = admin.list_partition_offsets(
                    {tp: OffsetSpec.LATEST for tp in tps}, timeout_ms=timeout_ms
                )
                earliest = admin.list_partition_offsets(
                    {tp: OffsetSpec.EARLIEST for tp in tps}, timeout_ms=timeout_ms
                )
                break
            except KafkaError as exc:
                if getattr(exc, "retriable", False) and time.monotonic() < deadline:
                    log.debug("retrying lag of group %s after %s", group, exc)
                    time.sleep(0.5)
                    continue
                raise LagError(f"lag of group {group!r} on {topics} at {bootstrap}: {exc}") from exc
    finally:
        admin.close()
    result = compute_lag(
        {(tp.topic, tp.partition): o.offset for tp, o in latest.items()},
        {(tp.topic, tp.partition): o.offset for tp, o in committed_raw.items() if o is not None},
        {(tp.topic, tp.partition): o.offset for tp, o in earliest.items()},
    )
    result["group"] = group
    log.debug("lag %s on %s: %d", group, topics, result["total"])
    return result
