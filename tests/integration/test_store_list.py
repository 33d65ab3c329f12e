"""Store.list(prefix, start_after): the same answer from the local store and from real S3."""

from __future__ import annotations

import os
import random

import pytest

from ocrstream.store.local import LocalStore
from ocrstream.store.s3 import S3Store


def _check_list(store) -> None:  # noqa: ANN001
    rng = random.Random(os.urandom(8))
    prefix = f"t-{os.urandom(4).hex()}/pages/"
    keys = sorted({f"{prefix}{rng.randrange(1, 400):05d}.json" for _ in range(rng.randint(5, 30))})
    for k in keys:
        store.put(k, b"{}")
    store.put(f"{prefix[:-1]}-other/00001.json", b"{}")  # a sibling prefix is not listed
    assert store.list(prefix) == keys
    for _ in range(5):
        after = rng.choice([*keys, f"{prefix}{rng.randrange(0, 400):05d}.json", ""])
        assert store.list(prefix, start_after=after) == [k for k in keys if k > after], after


def test_local_store_list_start_after(tmp_path):
    _check_list(LocalStore(tmp_path))


@pytest.mark.minio
def test_s3_store_list_start_after(minio_endpoint, minio_bucket):
    ep = minio_endpoint
    _check_list(S3Store(ep.endpoint, ep.access_key, ep.secret_key, minio_bucket, secure=ep.secure))
