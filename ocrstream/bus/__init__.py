"""Message bus: the protocol (``base``), Kafka (``kafka``) and in-memory (``memory``) implementations."""

from ocrstream.bus.base import Bus, Consumer, Headers, Producer, Record
from ocrstream.bus.memory import MemoryBus

__all__ = ["Bus", "Consumer", "Headers", "MemoryBus", "Producer", "Record", "build_bus"]


def build_bus(kind: str, bootstrap: str = "") -> Bus:
    if kind == "memory":
        return MemoryBus()
    if kind == "kafka":
        from ocrstream.bus.kafka import KafkaBus

        return KafkaBus(bootstrap)
    raise ValueError(f"unknown bus kind {kind!r} (expected kafka or memory)")
