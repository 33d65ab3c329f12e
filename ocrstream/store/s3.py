"""MinIO / S3 store over the ``minio`` client. ``NoSuchKey`` maps to ``NotFound``; every other
S3 or connection error maps to ``StoreUnavailable`` (retried with backoff by the worker)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from ocrstream.errors import NotFound, StoreUnavailable


@contextmanager
def _mapped(what: str, key: str = "") -> Iterator[None]:
    try:
        yield
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            raise NotFound(f"no object {key!r}: {exc.code}") from exc
        raise StoreUnavailable(f"s3 {what} {key!r} failed: {exc.code} {exc.message}") from exc
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise StoreUnavailable(f"s3 {what} {key!r} failed: {exc!r}") from exc


class S3Store:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool = False,
        create: bool = True,
    ) -> None:
        self.bucket = bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, http_client=http
        )
        if create:
            with _mapped("make bucket", bucket):
                if not self.client.bucket_exists(bucket):
                    try:
                        self.client.make_bucket(bucket)
                    except S3Error as exc:
                        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                            raise

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with _mapped("put", key):
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def get(self, key: str) -> bytes:
        with _mapped("get", key):
            resp = self.client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

    def exists(self, key: str) -> bool:
        try:
            with _mapped("stat", key):
                self.client.stat_object(self.bucket, key)
            return True
        except NotFound:
            return False

    def list(self, prefix: str, start_after: str = "") -> list[str]:
        with _mapped("list", prefix):
            objs = self.client.list_objects(
                self.bucket, prefix=prefix, recursive=True, start_after=start_after or None
            )
            return sorted(o.object_name for o in objs)

    def delete(self, key: str) -> None:
        with _mapped("delete", key):
            self.client.remove_object(self.bucket, key)
