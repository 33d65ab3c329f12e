"""Smoke: the dev S3 store takes a new bucket and round-trips an object through the MinIO SDK."""

import io
import os

import pytest

pytestmark = pytest.mark.minio


def test_minio_bucket_object_roundtrip(minio_client, minio_bucket):
    assert minio_client.bucket_exists(minio_bucket)
    data = os.urandom(1 << 20 | 12345)  # ~1 MiB, not a multiple of any block size
    name = "smoke/doc.bin"
    minio_client.put_object(
        minio_bucket, name, io.BytesIO(data), length=len(data), content_type="application/octet-stream"
    )

    stat = minio_client.stat_object(minio_bucket, name)
    assert stat.size == len(data)
    resp = minio_client.get_object(minio_bucket, name)
    try:
        got = resp.read()
    finally:
        resp.close()
        resp.release_conn()
    assert got == data
    assert [o.object_name for o in minio_client.list_objects(minio_bucket, prefix="smoke/")] == [name]
