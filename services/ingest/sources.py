"""Document sources besides the HTTP API: an S3/MinIO bucket prefix, a local folder, and the
fetcher behind the reference topic. Each new object is submitted once: a marker per bucket
object etag (per file path+size+mtime for folders) is written after the submit succeeded.

What a source may read is bounded: the reference topic reads only under the allow-listed local
roots (``OCRSTREAM_INGEST_REF_ROOTS``) and buckets (``OCRSTREAM_INGEST_REF_BUCKETS``), both empty
by default; paths are resolved (symlinks followed) before the check, so a link cannot lead out of
a root, and a watched folder skips links that leave it. Reads stop at the ingest size limit.
Refused or rejected documents are dead-lettered once (the marker remembers them).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from minio import Minio

from ocrstream import layout
from ocrstream.errors import NotFound, OversizedDocument, PermanentError
from ocrstream.services.ingest.handler import Ingestor
from ocrstream.store.base import Store, put_json
from ocrstream.store.s3 import _mapped

log = logging.getLogger(__name__)

SUFFIXES = (".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


class ForbiddenPath(PermanentError):
    reason = "forbidden_path"


class ForbiddenBucket(PermanentError):
    reason = "forbidden_bucket"


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of regular file ``path`` (not followed if it is itself a link), at most ``limit``:
    a larger file is OversizedDocument before more than limit + 1 bytes are read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError as exc:
        raise NotFound(f"{path}: no such file") from exc
    except OSError as exc:
        raise PermanentError(f"{path}: {exc.strerror or exc}", reason="unreadable") from exc
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise PermanentError(f"{path}: not a regular file", reason="unreadable")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OversizedDocument(f"{path}: more than {limit} bytes")
    return data


class BucketSource:
    def __init__(
        self,
        client: Minio,
        bucket: str,
        prefix: str,
        ingestor: Ingestor,
        store: Store,
        mode: str = "",
        prompt: str = "",
    ):
        self.client, self.bucket, self.prefix = client, bucket, prefix
        self.ingestor, self.store, self.mode, self.prompt = ingestor, store, mode, prompt

    def scan(self) -> int:
        """Submit objects not seen before; returns how many were submitted."""
        n = 0
        with _mapped("list", self.prefix):
            objects = list(self.client.list_objects(self.bucket, prefix=self.prefix, recursive=True))
        origin = f"s3://{self.bucket}/{self.prefix}"
        for obj in objects:
            etag = (obj.etag or "").strip('"')
            marker = layout.bucket_marker_key(self.bucket, etag)
            if not etag or self.store.exists(marker):
                continue
            if obj.size is not None and obj.size > self.ingestor.max_bytes:
                err = OversizedDocument(
                    f"{obj.object_name}: {obj.size} bytes, limit {self.ingestor.max_bytes}"
                )
                sub = _rejected(self.ingestor, err, origin, obj.object_name)
            else:
                with _mapped("get", obj.object_name):
                    resp = self.client.get_object(self.bucket, obj.object_name)
                    try:
                        data = resp.read()
                    finally:
                        resp.close()
                        resp.release_conn()
                sub = _submit(self.ingestor, data, obj.object_name, self.mode, self.prompt, origin)
            put_json(self.store, marker, {"key": obj.object_name, "etag": etag, "job_id": sub})
            n += not sub.startswith("rejected")
        return n


class FolderSource:
    def __init__(
        self, folder: str | Path, ingestor: Ingestor, store: Store, mode: str = "", prompt: str = ""
    ):
        self.folder = Path(folder)
        self.ingestor, self.store, self.mode, self.prompt = ingestor, store, mode, prompt

    def scan(self) -> int:
        n = 0
        root = self.folder.resolve()
        origin = f"folder:{root}"
        for path in sorted(self.folder.rglob("*")):
            if path.suffix.lower() not in SUFFIXES:
                continue
            real = path.resolve()
            if not real.is_file():
                continue
            st = real.stat()
            ident = hashlib.sha256(f"{real}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
            marker = layout.folder_marker_key(ident)
            if self.store.exists(marker):
                continue
            if not real.is_relative_to(root):
                # A link out of the watched folder would let anyone who can write here read any file.
                err = ForbiddenPath(f"{path}: a symlink to {real}, outside the watched folder {root}")
                sub = _rejected(self.ingestor, err, origin, str(path))
            else:
                try:
                    data = read_capped(real, self.ingestor.max_bytes)
                except PermanentError as exc:
                    sub = _rejected(self.ingestor, exc, origin, str(path))
                else:
                    sub = _submit(self.ingestor, data, path.name, self.mode, self.prompt, origin)
            put_json(self.store, marker, {"path": str(path), "job_id": sub})
            n += not sub.startswith("rejected")
        return n


def _rejected(ingestor: Ingestor, exc: PermanentError, origin: str, name: str) -> str:
    # Remembered by the caller's marker so it is not retried (or dead-lettered again) every scan.
    ingestor.dead_letter(exc, origin, name)
    return f"rejected: {exc.reason}: {exc}"


def _submit(ingestor: Ingestor, data: bytes, name: str, mode: str, prompt: str, origin: str) -> str:
    try:
        return ingestor.submit(data, name, mode, prompt).job_id
    except PermanentError as exc:  # rejected at the door: empty, oversized, bad mode...
        return _rejected(ingestor, exc, origin, name)


def make_fetcher(
    client: Minio | None,
    roots: Iterable[str | Path] = (),
    buckets: Iterable[str] = (),
    max_bytes: int = 64 * 1024 * 1024,
) -> Callable[[str], bytes]:
    """uri -> bytes for the reference topic, limited to files under ``roots`` (absolute folders)
    and objects in ``buckets``; raises ForbiddenPath / ForbiddenBucket / NotFound / OversizedDocument."""
    allowed_roots = []
    for r in roots:
        if not Path(r).is_absolute():
            raise ValueError(
                f"reference root {str(r)!r} must be an absolute path (OCRSTREAM_INGEST_REF_ROOTS)"
            )
        allowed_roots.append(Path(r).resolve())
    allowed_buckets = frozenset(buckets)

    def fetch(uri: str) -> bytes:
        if uri.startswith("s3://"):
            bucket, _, key = uri[5:].partition("/")
            if bucket not in allowed_buckets:
                raise ForbiddenBucket(
                    f"{uri}: bucket {bucket!r} is not allowed for references (OCRSTREAM_INGEST_REF_BUCKETS: "
                    f"{', '.join(sorted(allowed_buckets)) or 'none'})"
                )
            if not key:
                raise NotFound(f"{uri}: no object key")
            if client is None:
                raise NotFound(f"{uri}: no S3 client configured")
            with _mapped("stat", uri):
                size = client.stat_object(bucket, key).size
            if size is not None and size > max_bytes:
                raise OversizedDocument(f"{uri}: {size} bytes, limit {max_bytes}")
            with _mapped("get", uri):
                resp = client.get_object(bucket, key)
                try:
                    return resp.read()
                finally:
                    resp.close()
                    resp.release_conn()
        path = Path(uri[7:] if uri.startswith("file://") else uri)
        if not path.is_absolute():
            raise ForbiddenPath(f"{uri}: not an absolute path")
        try:
            real = path.resolve(strict=True)
        except FileNotFoundError as exc:
            raise NotFound(f"{uri}: no such file") from exc
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise PermanentError(f"{uri}: {exc}", reason="unreadable") from exc
        if not any(real.is_relative_to(r) for r in allowed_roots):
            where = f"is {real}, " if real != path else ""
            raise ForbiddenPath(
                f"{uri}: {where}outside the allowed reference roots (OCRSTREAM_INGEST_REF_ROOTS: "
                f"{', '.join(map(str, allowed_roots)) or 'none'})"
            )
        return read_capped(real, max_bytes)

    return fetch
