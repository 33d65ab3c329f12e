"""Redis token cache. Keys are namespaced by a prefix; values expire after a TTL; the server's
``maxmemory-policy`` should be ``allkeys-lru`` so a full cache evicts cold tokens instead of
refusing writes. The policy is server-wide and the Redis may be shared, so services only check it
(``check_policy`` warns on a mismatch) and never change it: set it on the server (the dev Redis of
scripts/infra/redis.sh starts with it). Redis errors are mapped to ``CacheUnavailable``."""

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

    def check_policy(self, expected: str = "allkeys-lru") -> bool:
        """True when the server's ``maxmemory-policy`` is ``expected``; otherwise (or when CONFIG
        is not allowed, as on most managed Redis) log a warning and return False. Never sets it."""
        if not expected:
            return True
        try:
            actual = self.policy()
        except CacheUnavailable as exc:
            if isinstance(exc.__cause__, redis.ResponseError):  # CONFIG disabled or not permitted
                log.warning(
                    "cannot read redis maxmemory-policy (%s); make sure the server uses %s", exc, expected
                )
                return False
            raise
        if actual != expected:
            log.warning(
                "redis maxmemory-policy is %r, the token cache expects %r (a full cache may refuse "
                "writes or evict other data); set it on the server, ocrstream does not change it",
                actual,
                expected,
            )
            return False
        return True

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
