"""Every storage key, and the job status records: the one place a key is built.

Keys are derived from (doc id, mode, page), (job id, page) or content hashes: rewriting a key under
redelivery rewrites the same object, which is what makes the stages idempotent. The same strings are
the Redis keys of what is also cached (vision tokens, context tokens).

    docs/<doc>/source                     original bytes        (ingest)
    docs/<doc>/meta.json                  filename, hash, size  (ingest)
    docs/<doc>/<mode>/pages/<p>.png       page image            (rasterizer)
    docs/<doc>/<mode>/manifest.json       the pages rasterized  (rasterizer)
    docs/<doc>/text/<p>.txt               PDF text layer        (rasterizer)
    docs/<doc>/<mode>/encoded/<p>.json    TokenRecord per page  (encoder; re-decode reads it)
    tokens/<weights>/<mode>/<hash>.vt     durable vision tokens (encoder; Redis key too)
    jobs/<job>/status.json                job status            (ingest, rasterizer, assembler)
    jobs/<job>/pages/<p>.json             per-page result       (assembler)
    jobs/<job>/result.md, result.json     assembled document    (assembler)
    sources/s3/<bucket>/<etag>.json       "already submitted" markers of the bucket source
    sources/dir/<id>.json                 ... and of the watched folder
    context/<name>/manifest.json          a context store's config and segments (context API)
    context/<name>/pages/<seq>.png        a context segment's page image
    context/<name>/tokens/<seq>.<mode>.vt its vision tokens (Redis key too)
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from ocrstream.errors import NotFound
from ocrstream.store.base import Store, get_json, update_json

TERMINAL = ("completed", "degraded", "failed")
_RANK = {"submitted": 0, "rasterized": 1, "completed": 2, "degraded": 2, "failed": 2}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def doc_id_for(data: bytes) -> str:
    return sha256(data)[:32]


def job_id_for(doc_id: str, mode: str, prompt: str) -> str:
    """Deterministic: the same document, mode and prompt is the same job (duplicate detection)."""
    return f"{doc_id[:24]}-{mode}-{sha256(prompt.encode())[:8]}"


def source_key(doc_id: str) -> str:
    return f"docs/{doc_id}/source"


def meta_key(doc_id: str) -> str:
    return f"docs/{doc_id}/meta.json"


def page_image_key(doc_id: str, mode: str, page: int) -> str:
    return f"docs/{doc_id}/{mode}/pages/{page:05d}.png"


def page_manifest_key(doc_id: str, mode: str) -> str:
    return f"docs/{doc_id}/{mode}/manifest.json"


def text_layer_key(doc_id: str, page: int) -> str:
    return f"docs/{doc_id}/text/{page:05d}.txt"


def encoded_key(doc_id: str, mode: str, page: int) -> str:
    return f"docs/{doc_id}/{mode}/encoded/{page:05d}.json"


def encoded_prefix(doc_id: str, mode: str) -> str:
    return f"docs/{doc_id}/{mode}/encoded/"


def token_key(image_hash: str, mode: str, weights_id: str) -> str:
    """A page's vision tokens: content, mode and encoder weights (store and cache key)."""
    return f"tokens/{weights_id}/{mode}/{image_hash}.vt"


def status_key(job_id: str) -> str:
    return f"jobs/{job_id}/status.json"


def page_result_key(job_id: str, page: int) -> str:
    return f"jobs/{job_id}/pages/{page:05d}.json"


def page_of_result_key(key: str) -> int | None:
    """The page number of a ``page_result_key``; None for any other object under the prefix."""
    name = key.rsplit("/", 1)[-1].removesuffix(".json")
    return int(name) if name.isdigit() else None


def page_result_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/pages/"


def markdown_key(job_id: str) -> str:
    return f"jobs/{job_id}/result.md"


def result_key(job_id: str) -> str:
    return f"jobs/{job_id}/result.json"


def bucket_marker_key(bucket: str, etag: str) -> str:
    return f"sources/s3/{bucket}/{etag}.json"


def folder_marker_key(ident: str) -> str:
    return f"sources/dir/{ident}.json"


CONTEXT_PREFIX = "context/"
_CONTEXT_MANIFEST = re.compile(r"context/([^/]+)/manifest\.json")


def context_prefix(name: str) -> str:
    return f"{CONTEXT_PREFIX}{name}/"


def context_manifest_key(name: str) -> str:
    return f"{CONTEXT_PREFIX}{name}/manifest.json"


def context_name_of_manifest_key(key: str) -> str | None:
    """The context name of a ``context_manifest_key``; None for any other key."""
    m = _CONTEXT_MANIFEST.fullmatch(key)
    return m.group(1) if m else None


def context_page_key(name: str, seq: int) -> str:
    return f"{CONTEXT_PREFIX}{name}/pages/{seq:08d}.png"


def context_token_key(name: str, seq: int, mode: str) -> str:
    return f"{CONTEXT_PREFIX}{name}/tokens/{seq:08d}.{mode}.vt"


class Jobs:
    """Job status records. Updates only move forward (submitted -> rasterized -> terminal) and a
    terminal status is final, so a redelivered earlier-stage message cannot undo a completed job.

    Every write is a compare-and-set on the record's version (``update_json``: S3 If-Match /
    If-None-Match, a locked compare in the local store), retried on a lost race against the
    winner's value: of two replicas finishing the same job at once exactly one gets the record
    back from ``advance``; the other gets ``None``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, job_id: str) -> dict[str, Any]:
        try:
            return get_json(self.store, status_key(job_id))
        except NotFound as exc:
            raise NotFound(f"unknown job {job_id!r}") from exc

    def exists(self, job_id: str) -> bool:
        return self.store.exists(status_key(job_id))

    @staticmethod
    def _new(job_id: str, now: float, fields: dict[str, Any]) -> dict[str, Any]:
        rec = {
            "job_id": job_id,
            "status": "submitted",
            "n_pages": 0,
            "reason": "",
            "created_at": now,
            "updated_at": now,
        }
        rec.update(fields)
        return rec

    def create(self, job_id: str, **fields: Any) -> dict[str, Any]:
        """A fresh ``submitted`` record, replacing any earlier one (a resubmission)."""
        rec = update_json(self.store, status_key(job_id), lambda _cur: self._new(job_id, time.time(), fields))
        assert rec is not None
        return rec

    def advance(
        self,
        job_id: str,
        status: str,
        defaults: dict[str, Any] | None = None,
        rev: str = "",
        **fields: Any,
    ) -> dict[str, Any] | None:
        """Move to ``status`` with ``fields`` if that is forward of the current status (or the
        same non-terminal one); ``None`` when it is not, e.g. the job is already terminal. A missing
        record (a stage ran before ingest's record was visible, or no ingest) is created with
        ``defaults``. ``rev``: see ``update_json`` (the same rev again returns the record it wrote)."""

        def step(cur: dict[str, Any] | None) -> dict[str, Any] | None:
            now = time.time()
            rec = cur if cur is not None else self._new(job_id, now, defaults or {})
            old = rec.get("status", "submitted")
            if old in TERMINAL or _RANK[status] < _RANK.get(old, 0):
                return None
            rec.update(fields, status=status, updated_at=now)
            return rec

        return update_json(self.store, status_key(job_id), step, rev=rev)

    def pages_done(self, job_id: str) -> int:
        return len(self.store.list(page_result_prefix(job_id)))
