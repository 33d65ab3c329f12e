"""The two token tiers: the cache (Redis or in-process LRU: fast, TTL, may evict any time) in front of
the durable store (MinIO / local folder). The encoder writes through both; the decoder and the
context API read the cache first and refill it from the store."""

from __future__ import annotations

import logging

from ocrstream.cache.base import Cache
from ocrstream.errors import NotFound, TransientError
from ocrstream.store.base import Store
from ocrstream.telemetry import Telemetry

log = logging.getLogger(__name__)


class TokenTiers:
    """Redis (fast, TTL, LRU) in front of the durable store (MinIO / local folder). ``cache`` None =
    the store alone; ``telemetry`` None = no hit/miss counts."""

    def __init__(
        self, cache: Cache | None, store: Store, telemetry: Telemetry | None = None, ttl_s: int | None = None
    ) -> None:
        self.cache, self.store, self.telemetry, self.ttl_s = cache, store, telemetry, ttl_s

    def get(self, key: str) -> bytes | None:
        data = None
        if self.cache is not None:
            try:
                data = self.cache.get(key)
            except TransientError as exc:
                log.warning("token cache unavailable, using the store: %s", exc)
        if data is not None:
            self._count("hit")
            return data
        try:
            data = self.store.get(key)
        except NotFound:
            self._count("miss")
            return None
        self._count("hit")
        self._cache_set(key, data)
        return data

    def put(self, key: str, data: bytes) -> None:
        self.store.put(key, data)  # durable first: the cache may evict any time
        self._cache_set(key, data)

    def delete(self, key: str) -> None:
        self.store.delete(key)
        if self.cache is None:
            return
        try:
            self.cache.delete(key)
        except TransientError as exc:  # a stale cached copy expires by its TTL
            log.warning("token cache delete skipped: %s", exc)

    def _cache_set(self, key: str, data: bytes) -> None:
        if self.cache is None:
            return
        try:
            self.cache.set(key, data, self.ttl_s)
        except TransientError as exc:
            log.warning("token cache write skipped: %s", exc)

    def _count(self, result: str) -> None:
        if self.telemetry is not None:
            self.telemetry.cache.labels(result).inc()
