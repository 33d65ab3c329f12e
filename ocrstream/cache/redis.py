"""Redis token cache. Keys are namespaced by a prefix; values expire after a TTL; the server's
``maxmemory-policy`` should be ``allkeys-lru`` so a full cache evicts cold tokens instead of
refusing writes (``ensure_policy`` sets it on our own Redis; managed Redis: set it there).
Redis errors are mapped to ``CacheUnavailable``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from ocrstream.errors import CacheUnavailable

log = logging.getLogger(__name__)


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        raise CacheUnavailable(f"redis {what} failed: {exc!r}") from exc


class RedisCache:
    def __init__(self, url: str, prefix: str = "ocrstream:", default_ttl_s: int | None = None) -> None:
        self.prefix = prefix
        self.default_ttl_s = default_ttl_s
        self._r = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

    def ensure_policy(self, policy: str = "allkeys-lru") -> bool:
        """Set the eviction policy; False (logged) where CONFIG is not allowed."""
        if not policy:
            return False
        try:
            self._r.config_set("maxmemory-policy", policy)
            return True
        except redis.ResponseError as exc:
            log.warning("cannot set redis maxmemory-policy=%s (%s); set it on the server", policy, exc)
            return False
        except redis.RedisError as exc:
            raise CacheUnavailable(f"redis CONFIG SET failed: {exc!r}") from exc

    def policy(self) -> str:
        with _mapped("CONFIG GET"):
            return str(self._r.config_get("maxmemory-policy").get("maxmemory-policy", ""))

    def ping(self) -> bool:
        with _mapped("PING"):
            return bool(self._r.ping())

    def get(self, key: str) -> bytes | None:
        with _mapped("GET"):
            return self._r.get(self.prefix + key)

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        ttl = ttl_s if ttl_s is not None else self.default_ttl_s
        with _mapped("SET"):
            self._r.set(self.prefix + key, value, ex=ttl)

    def delete(self, key: str) -> None:
        with _mapped("DEL"):
            self._r.delete(self.prefix + key)
