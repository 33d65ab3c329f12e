"""In-process LRU + TTL cache (embedded mode): bounded by total bytes."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class MemoryCache:
    def __init__(self, max_bytes: int = 512 * 1024 * 1024, default_ttl_s: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.default_ttl_s = default_ttl_s
        self._items: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            value, expires = item
            if expires is not None and time.monotonic() >= expires:
                self._drop(key)
                return None
            self._items.move_to_end(key)
            return value

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        ttl = ttl_s if ttl_s is not None else self.default_ttl_s
        if len(value) > self.max_bytes:
            return  # larger than the whole cache: the durable store still has it
        with self._lock:
            if key in self._items:
                self._drop(key)
            self._items[key] = (value, None if ttl is None else time.monotonic() + ttl)
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._items)))

    def delete(self, key: str) -> None:
        with self._lock:
            if key in self._items:
                self._drop(key)

    def _drop(self, key: str) -> None:
        value, _ = self._items.pop(key)
        self._bytes -= len(value)
