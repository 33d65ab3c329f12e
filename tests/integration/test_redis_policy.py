"""Services never change a shared Redis's server-wide maxmemory-policy: they check it and warn."""

from __future__ import annotations

import logging

import pytest

from ocrstream.cache.redis import RedisCache
from ocrstream.config import CommonConfig, EncoderConfig
from ocrstream.services.wiring import build_cache

pytestmark = pytest.mark.redis


def test_encoder_cache_checks_the_policy_and_never_sets_it(redis_url, redis_client, redis_key_prefix, caplog):
    before = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
    other = "volatile-lfu" if before != "volatile-lfu" else "allkeys-lru"
    common = CommonConfig.from_env({}, redis_url=redis_url, redis_key_prefix=redis_key_prefix, cache="redis")
    try:
        with caplog.at_level(logging.WARNING, logger="ocrstream.cache.redis"):
            cache = build_cache(common, EncoderConfig.from_env({}, redis_maxmemory_policy=other))
        after = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]
        assert after == before, f"a service changed the shared Redis policy from {before} to {after}"
        assert any(other in r.getMessage() and before in r.getMessage() for r in caplog.records), caplog.text
        assert isinstance(cache, RedisCache)
        assert cache.check_policy(before) is True and cache.check_policy(other) is False
        assert cache.check_policy("") is True  # empty: no expectation
    finally:
        if redis_client.config_get("maxmemory-policy")["maxmemory-policy"] != before:
            redis_client.config_set("maxmemory-policy", before)  # undo what the old code did
