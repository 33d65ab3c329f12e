"""MinIO / S3 store over the ``minio`` client. ``NoSuchKey`` maps to ``NotFound``; every other
S3 or connection error maps to ``StoreUnavailable`` (retried with backoff by the worker).

Conditional writes are S3's: ``If-None-Match: *`` (create only) and ``If-Match: <ETag>``; a 412
(or AWS's 409 ``ConditionalRequestConflict``) is a ``WriteConflict``. The SDK has no public call
for them, so ``put_if`` goes through ``Minio._put_object`` with the headers (minio is pinned).

The version is the ETag *of the bytes read*: versitygw (the dev S3 server) can answer a GET with
a body and the ETag of another version under concurrent writers (measured: ~15% of reads at 8
racing writers, the same torn pair sometimes twice in a row), and an If-Match on that ETag
overwrote a version never read (lost updates, measured). A single-part object's ETag is the MD5 of
its bytes, so the version sent is the MD5 of the bytes read, and a mismatching read is retried.
Servers whose ETags are not MD5s (SSE-KMS, SSE-C) are recognised from this client's own writes
(the ETag a put answers against the MD5 of what was sent); their ETags are used as they come.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from ocrstream.errors import NotFound, StoreUnavailable
from ocrstream.store.base import WriteConflict

_CONFLICT_CODES = ("PreconditionFailed", "ConditionalRequestConflict")
TORN_READ_RETRIES = 10


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - S3's ETag, not a security hash


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
        self.etags_are_md5: bool | None = None  # learnt from the first write's answer
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
            res = self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            )
        self._learn(res.etag, data)

    def _learn(self, etag: str | None, data: bytes) -> None:
        etag = (etag or "").strip('"')
        if self.etags_are_md5 is None and etag and "-" not in etag:  # "-": a multipart upload's ETag
            self.etags_are_md5 = etag == _md5(data)

    def get(self, key: str) -> bytes:
        with _mapped("get", key):
            resp = self.client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        for _ in range(TORN_READ_RETRIES):
            with _mapped("get", key):
                resp = self.client.get_object(self.bucket, key)
                try:
                    data, etag = resp.read(), resp.headers.get("etag", "").strip('"')
                finally:
                    resp.close()
                    resp.release_conn()
            if self.etags_are_md5 is False:
                return data, etag
            if etag == _md5(data):
                return data, etag
            # A torn read (body and ETag of different versions), or ETags that are not MD5s on a
            # server this client has not written to yet: read again, then go by the bytes.
        return data, _md5(data)  # at worst a conflict, never a write over an unread version

    def put_if(
        self, key: str, data: bytes, version: str | None, content_type: str = "application/octet-stream"
    ) -> None:
        headers = {"Content-Type": content_type}
        headers |= {"If-None-Match": "*"} if version is None else {"If-Match": f'"{version}"'}
        with _mapped("conditional put", key):
            try:
                res = self.client._put_object(self.bucket, key, data, headers=headers)  # noqa: SLF001
            except S3Error as exc:
                # NoSuchKey on If-Match: the object was deleted since it was read.
                if exc.code in _CONFLICT_CODES or (version is not None and exc.code == "NoSuchKey"):
                    raise WriteConflict(f"s3 put {key!r} at version {version}: {exc.code}") from exc
                raise
        self._learn(res.etag, data)

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
