"""In-memory bus for the embedded one-process mode and handler tests.

Not a mock: it keeps an append-only log per topic partition and committed offsets per consumer
group, so a consumer that is dropped without committing and re-created in the same group gets
the uncommitted records again, exactly as Kafka redelivers after a crash.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import defaultdict

from ocrstream.bus.base import Headers, Record


class MemoryBus:
    def __init__(self, partitions: int = 1) -> None:
        self._partitions = partitions
        self._logs: dict[str, list[list[Record]]] = {}
        self._committed: dict[tuple[str, str, int], int] = defaultdict(int)
        self._cond = threading.Condition()

    def ensure_topics(self, topics: list[str], partitions: int | None = None) -> None:
        with self._cond:
            for t in topics:
                self._logs.setdefault(t, [[] for _ in range(partitions or self._partitions)])

    def _log(self, topic: str) -> list[list[Record]]:
        if topic not in self._logs:
            self.ensure_topics([topic])
        return self._logs[topic]

    def append(self, topic: str, key: str, value: bytes, headers: Headers | None) -> Record:
        with self._cond:
            parts = self._log(topic)
            p = zlib.crc32(key.encode()) % len(parts)
            rec = Record(topic, p, len(parts[p]), key, value, list(headers or []))
            parts[p].append(rec)
            self._cond.notify_all()
            return rec

    def records(self, topic: str) -> list[Record]:
        """Every record ever published to ``topic`` (tests, dead-letter inspection)."""
        with self._cond:
            return [r for part in self._log(topic) for r in part]

    def producer(self) -> MemoryProducer:
        return MemoryProducer(self)

    def consumer(self, topics: list[str], group: str) -> MemoryConsumer:
        return MemoryConsumer(self, topics, group)


class MemoryProducer:
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    def publish(self, topic: str, key: str, value: bytes, headers: Headers | None = None) -> None:
        self._bus.append(topic, key, value, headers)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryConsumer:
    def __init__(self, bus: MemoryBus, topics: list[str], group: str) -> None:
        self._bus = bus
        self._group = group
        self._topics = list(topics)
        bus.ensure_topics(self._topics)
        with bus._cond:
            self._pos = {
                (t, p): bus._committed[(group, t, p)] for t in self._topics for p in range(len(bus._log(t)))
            }

    @property
    def ready(self) -> bool:
        return True

    def _take(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for (t, p), pos in self._pos.items():
            part = self._bus._log(t)[p]
            take = part[pos : pos + max_records - len(out)]
            out.extend(take)
            self._pos[(t, p)] = pos + len(take)
            if len(out) >= max_records:
                break
        return out

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        with self._bus._cond:
            while True:
                out = self._take(max_records)
                left = deadline - time.monotonic()
                if out or left <= 0:
                    return out
                self._bus._cond.wait(left)

    def commit(self) -> None:
        with self._bus._cond:
            for (t, p), pos in self._pos.items():
                self._bus._committed[(self._group, t, p)] = pos

    def lag(self) -> dict[tuple[str, int], int]:
        with self._bus._cond:
            return {
                (t, p): len(self._bus._log(t)[p]) - self._bus._committed[(self._group, t, p)]
                for (t, p) in self._pos
            }

    def close(self) -> None:
        pass
