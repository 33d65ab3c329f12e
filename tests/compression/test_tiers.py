"""The context store on the real tiers: Redis as the hot cache, the S3 server (MinIO SDK) as the store."""

from __future__ import annotations

import pytest

from ocrstream.compression.context_store import ContextStore
from ocrstream.compression.ladder import model_ladder

pytestmark = [pytest.mark.redis, pytest.mark.minio]


def test_context_on_redis_and_s3(
    model, rng, redis_url, redis_key_prefix, redis_client, minio_endpoint, minio_bucket
):
    from ocrstream.cache.redis import RedisCache
    from ocrstream.store.s3 import S3Store

    e = minio_endpoint
    store = S3Store(e.endpoint, e.access_key, e.secret_key, minio_bucket, e.secure)
    cache = RedisCache(redis_url, redis_key_prefix)
    cs = ContextStore.open(
        "chat", model, store, cache, ladder=list(model_ladder(model.config)), budget_tokens=50
    )
    for i in range(5):
        cs.add(f"turn {i} " + " ".join(rng.choice(["red", "green", "blue", "grey"]) for _ in range(20)))
    assert cs.used_tokens() <= 50
    keys = [cs.token_key(s) for s in cs.segments]
    assert all(redis_client.exists(redis_key_prefix + k) for k in keys)  # hot tier holds them
    assert all(store.exists(k) for k in keys)  # durable tier too
    before = [(s.seq, vt.embeds.clone()) for s, vt in cs.read_tokens()]
    for k in keys:  # the hot tier loses everything (eviction, restart)
        cache.delete(k)
    again = ContextStore.open("chat", model, store, cache)  # a new process: manifest from S3
    after = again.read_tokens()
    assert [s.seq for s, _ in after] == [seq for seq, _ in before]
    assert all(vt.embeds.equal(t) for (_, vt), (_, t) in zip(after, before, strict=True))
    assert all(redis_client.exists(redis_key_prefix + k) for k in keys)  # refilled from the store
    forgotten = set(range(cs.next_seq)) - {s.seq for s in cs.segments}
    assert forgotten and cs.forgotten == len(forgotten)
    for seq in forgotten:  # forgotten segments leave no page and no tokens behind
        assert not store.list(f"context/chat/pages/{seq:08d}") and not store.list(
            f"context/chat/tokens/{seq:08d}"
        )
