"""The message-bus interface: a producer and a consumer with explicit commits.

Delivery is at-least-once: a service publishes its outputs, flushes, and only then commits the
offsets of the inputs that produced them. Kafka and the in-memory bus implement this interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: Headers = field(default_factory=list)

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class Producer(Protocol):
    def publish(self, topic: str, key: str, value: bytes, headers: Headers | None = None) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Consumer(Protocol):
    def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...

    def commit(self) -> None:
        """Commit the position after every record returned by poll so far."""

    def lag(self) -> dict[tuple[str, int], int]: ...

    @property
    def ready(self) -> bool: ...

    def close(self) -> None: ...


class Bus(Protocol):
    def producer(self) -> Producer: ...

    def consumer(self, topics: list[str], group: str) -> Consumer: ...

    def ensure_topics(self, topics: list[str], partitions: int = 1) -> None: ...
