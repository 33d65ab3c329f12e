"""Smoke: the dev Redis stores, returns, expires and deletes values under a per-test key prefix."""

import os
import time

import pytest

pytestmark = pytest.mark.redis


def test_redis_set_get_ttl(redis_client, redis_key_prefix):
    key = f"{redis_key_prefix}smoke"
    value = os.urandom(64)
    assert redis_client.set(key, value, ex=120)
    assert redis_client.get(key) == value
    ttl = redis_client.ttl(key)
    assert 0 < ttl <= 120, ttl

    # A short-lived key really expires (the cache relies on TTLs); polled with a bound, not timed.
    short = f"{redis_key_prefix}short"
    assert redis_client.set(short, b"x", px=50)
    deadline = time.monotonic() + 10
    while redis_client.exists(short) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert redis_client.exists(short) == 0, "key set with px=50 still present after 10 s"

    assert redis_client.delete(key) == 1
    assert redis_client.get(key) is None
