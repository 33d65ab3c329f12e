"""Document sources besides the HTTP API: an S3/MinIO bucket prefix, a local folder, and the
fetcher behind the reference topic. Each new object is submitted once: a marker per bucket
object etag (per file path+size+mtime for folders) is written after the submit succeeded."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from minio import Minio
from ocrstream.services.ingest.handler import Ingestor

from ocrstream.errors import NotFound, PermanentError
from ocrstream.store.base import Store, put_json
from ocrstream.store.s3 import _mapped

log = logging.getLogger(__name__)

SUFFIXES = (".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


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
        for obj in objects:
            etag = (obj.etag or "").strip('"')
            marker = f"sources/s3/{self.bucket}/{etag}.json"
            if not etag or self.store.exists(marker):
                continue
            with _mapped("get", obj.object_name):
                resp = self.client.get_object(self.bucket, obj.object_name)
                try:
                    data = resp.read()
                finally:
                    resp.close()
                    resp.release_conn()
            sub = _submit(self.ingestor, data, obj.object_name, self.mode, self.prompt)
            put_json(self.store, marker, {"key": obj.object_name, "etag": etag, "job_id": sub})
            n += 1
        return n


class FolderSource:
    def __init__(
        self, folder: str | Path, ingestor: Ingestor, store: Store, mode: str = "", prompt: str = ""
    ):
        self.folder = Path(folder)
        self.ingestor, self.store, self.mode, self.prompt = ingestor, store, mode, prompt

    def scan(self) -> int:
        n = 0
        for path in sorted(self.folder.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in SUFFIXES:
                continue
            st = path.stat()
            ident = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[
                :32
            ]
            marker = f"sources/dir/{ident}.json"
            if self.store.exists(marker):
                continue
            sub = _submit(self.ingestor, path.read_bytes(), path.name, self.mode, self.prompt)
            put_json(self.store, marker, {"path": str(path), "job_id": sub})
            n += 1
        return n


def _submit(ingestor: Ingestor, data: bytes, name: str, mode: str, prompt: str) -> str:
    try:
        return ingestor.submit(data, name, mode, prompt).job_id
    except PermanentError as exc:
        # Rejected at the door (empty, oversized): remembered so it is not retried every scan.
        log.warning("source object %s rejected: %s", name, exc)
        return f"rejected: {exc.reason}: {exc}"


def make_fetcher(client: Minio | None):
    """uri -> bytes for the reference topic."""

    def fetch(uri: str) -> bytes:
        if uri.startswith("s3://"):
            if client is None:
                raise NotFound(f"{uri}: no S3 client configured")
            bucket, _, key = uri[5:].partition("/")
            with _mapped("get", uri):
                resp = client.get_object(bucket, key)
                try:
                    return resp.read()
                finally:
                    resp.close()
                    resp.release_conn()
        path = Path(uri[7:] if uri.startswith("file://") else uri)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"{uri}: no such file") from exc
        except OSError as exc:
            raise PermanentError(f"{uri}: {exc}", reason="unreadable") from exc

    return fetch
