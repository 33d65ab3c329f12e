"""Ingest step: documents in (upload, bucket, folder, reference topic) -> DocumentSubmitted.

The document id is the content hash, the job id is (document, mode, prompt): submitting the same
bytes again with the same mode and prompt returns the existing job (duplicate detected by
content hash). Re-decode publishes PageEncoded records straight from the per-page TokenRecords
the encoder left, so a new prompt costs zero encoder calls.

Ingest opens the document's trace: its span context travels in the submitted record's headers.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from PIL import Image

from ocrstream import layout, validation
from ocrstream.errors import EmptyDocument, InvalidMessage, NotFound, OversizedDocument, PermanentError
from ocrstream.messages import DeadLetter, DocumentRef, DocumentSubmitted, Message, TokenRecord
from ocrstream.services.runtime import SimpleHandler
from ocrstream.store.base import Store, get_json, put_json
from ocrstream.telemetry import Telemetry

log = logging.getLogger(__name__)

# publish(messages, span): the caller's producer + trace-context injection (Worker._publish).
Publish = Callable[[list[Message], "trace.Span | None"], None]


@dataclass(frozen=True)
class Submission:
    job_id: str
    doc_id: str
    duplicate: bool
    status: dict[str, Any]


class Ingestor:
    def __init__(
        self,
        store: Store,
        publish: Publish,
        telemetry: Telemetry,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        default_mode: str = "default",
        default_prompt: str = "free_ocr",
        flush: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.publish = publish
        self.flush = flush
        self.telemetry = telemetry
        self.jobs = layout.Jobs(store)
        self.max_bytes = max_bytes
        # Configured defaults pass the same checks as requests: a bad one fails at start.
        self.default_mode = validation.check_mode(default_mode)
        self.default_prompt = validation.check_prompt(default_prompt)

    def submit(self, data: bytes, filename: str, mode: str = "", prompt: str = "") -> Submission:
        """Raises PermanentError (bad_mode, bad_prompt, bad_filename, empty, oversized) before
        anything is stored or published."""
        filename = validation.check_filename(filename)
        mode = validation.check_mode(mode) if mode else self.default_mode
        prompt = validation.check_prompt(prompt) if prompt else self.default_prompt
        if not data:
            raise EmptyDocument(f"{filename}: 0 bytes")
        if len(data) > self.max_bytes:
            raise OversizedDocument(f"{filename}: {len(data)} bytes, limit {self.max_bytes}")
        doc_id = layout.doc_id_for(data)
        job_id = layout.job_id_for(doc_id, mode, prompt)
        # Published = marked so, or already moved on by a stage (which then saw the record): a stage
        # can fail the job before the mark lands, and the mark never lands on a terminal job.
        rec = self.jobs.get(job_id) if self.jobs.exists(job_id) else None
        if rec is not None and (rec.get("published") or rec.get("status", "submitted") != "submitted"):
            status = rec
            log.info(
                "duplicate submission of %s (%s): job %s is %s", filename, doc_id, job_id, status["status"]
            )
            return Submission(job_id, doc_id, True, status)
        if not self.store.exists(layout.source_key(doc_id)):
            self.store.put(layout.source_key(doc_id), data)
            put_json(
                self.store,
                layout.meta_key(doc_id),
                {"doc_id": doc_id, "filename": filename, "sha256": layout.sha256(data), "size": len(data)},
            )
        status = self.jobs.create(job_id, doc_id=doc_id, filename=filename, mode=mode, prompt=prompt)
        msg = DocumentSubmitted(
            job_id=job_id,
            doc_id=doc_id,
            source_key=layout.source_key(doc_id),
            filename=filename,
            mode=mode,
            prompt=prompt,
            size_bytes=len(data),
        )
        with self.telemetry.span("document", doc_id=doc_id, job_id=job_id, filename=filename) as span:
            self.publish([msg], span)
        self.flush()
        # Marked only after the record is out: a crash in between re-publishes on the next submit.
        status = self.jobs.advance(job_id, "submitted", published=True) or status
        self.telemetry.pages.labels("ingest").inc()
        return Submission(job_id, doc_id, False, status)

    def redecode(self, job_or_doc: str, prompt: str, mode: str = "") -> Submission:
        """A new prompt for an already encoded document: PageEncoded from the stored token records."""
        validation.check_job_id(job_or_doc, allow_doc_id=True)
        prompt = validation.check_prompt(prompt)
        doc_id, mode = self._resolve(job_or_doc, validation.check_mode(mode) if mode else "")
        job_id = layout.job_id_for(doc_id, mode, prompt)
        if self.jobs.exists(job_id) and self.jobs.get(job_id)["status"] != "failed":
            return Submission(job_id, doc_id, True, self.jobs.get(job_id))
        keys = self.store.list(layout.encoded_prefix(doc_id, mode))
        if not keys:
            raise NotFound(f"document {doc_id} has no encoded pages in mode {mode!r}; submit it first")
        records = [TokenRecord.from_record(get_json(self.store, k)) for k in keys]
        n = records[0].n_pages
        if len(records) != n:
            raise NotFound(
                f"document {doc_id} has {len(records)} of {n} pages encoded in mode {mode!r}; retry later"
            )
        meta = (
            get_json(self.store, layout.meta_key(doc_id))
            if self.store.exists(layout.meta_key(doc_id))
            else {}
        )
        status = self.jobs.create(
            job_id,
            doc_id=doc_id,
            filename=meta.get("filename", ""),
            mode=mode,
            prompt=prompt,
            n_pages=n,
            redecode_of=job_or_doc,
            published=True,
        )
        self.jobs.advance(job_id, "rasterized", n_pages=n)
        sizes = self._page_sizes(records, prompt)
        msgs: list[Message] = [
            r.encoded(job_id, doc_id, mode, prompt, cache_hit=True, allow_encode=False, width=w, height=h)
            for r, (w, h) in zip(records, sizes, strict=True)
        ]
        with self.telemetry.span("document redecode", doc_id=doc_id, job_id=job_id, prompt=prompt) as span:
            self.publish(msgs, span)
        self.flush()
        return Submission(job_id, doc_id, False, status)

    def _page_sizes(self, records: list[TokenRecord], prompt: str) -> list[tuple[int, int]]:
        """Page image sizes, to which the decoder scales grounding boxes (unknown, it falls back to
        the 0-999 grid). Read from the PNG headers, only for grounding prompts: others have no boxes."""
        from ocrstream.model.tokenizer import is_grounding_prompt

        if not is_grounding_prompt(prompt):
            return [(0, 0)] * len(records)
        sizes = []
        for r in records:
            with Image.open(io.BytesIO(self.store.get(r.image_key))) as img:
                sizes.append(img.size)
        return sizes

    def _resolve(self, job_or_doc: str, mode: str) -> tuple[str, str]:
        if self.jobs.exists(job_or_doc):
            job = self.jobs.get(job_or_doc)
            return job["doc_id"], mode or job["mode"]
        if self.store.exists(layout.meta_key(job_or_doc)):
            return job_or_doc, mode or self.default_mode
        raise NotFound(f"no job or document {job_or_doc!r}")

    def dead_letter(self, err: PermanentError, origin: str, key: str = "", fields: Any = None) -> None:
        """Record a request rejected at the door (HTTP, bucket or folder source) on the dead-letter
        topic, as the workers do for bad records: nothing refused is silently lost."""
        value = json.dumps(fields, default=str, ensure_ascii=False)[:4000] if fields is not None else ""
        dl = DeadLetter(
            stage="ingest",
            reason=err.reason,
            detail=str(err)[:2000],
            original_topic=origin[:300],
            original_key=key[:1024],  # a record stays well under Kafka's message size limit
            original_value=value,
        )
        self.telemetry.dead_letters.labels("ingest", err.reason).inc()
        log.warning("ingest: rejected %s from %s (%s): %s", key or "request", origin, err.reason, err)
        self.publish([dl], None)
        self.flush()

    def status(self, job_id: str) -> dict[str, Any]:
        validation.check_job_id(job_id)
        rec = self.jobs.get(job_id)
        rec["pages_done"] = self.jobs.pages_done(job_id)
        return rec

    def result(self, job_id: str, fmt: str = "markdown") -> bytes:
        validation.check_job_id(job_id)
        rec = self.jobs.get(job_id)
        if rec["status"] not in ("completed", "degraded"):
            raise NotFound(
                f"job {job_id} has no result (status {rec['status']}{': ' + rec['reason'] if rec['reason'] else ''})"
            )
        return self.store.get(layout.markdown_key(job_id) if fmt == "markdown" else layout.result_key(job_id))

    def wait(self, job_id: str, timeout_s: float = 600.0, poll_s: float = 0.2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            rec = self.jobs.get(job_id)
            if rec["status"] in layout.TERMINAL or time.monotonic() >= deadline:
                return rec
            time.sleep(poll_s)


class RefHandler(SimpleHandler):
    """Consumes the reference topic: ``s3://bucket/key`` or a local path -> submit."""

    stage = "ingest-refs"
    input_type = DocumentRef

    def __init__(self, ingestor: Ingestor, fetch: Callable[[str], bytes]) -> None:
        self.ingestor = ingestor
        self.fetch = fetch  # uri -> bytes (sources.make_fetcher: allow-listed roots and buckets)

    def handle(self, msg: DocumentRef) -> list[Message]:  # type: ignore[override]
        if not (msg.uri.startswith("s3://") or msg.uri.startswith("/") or msg.uri.startswith("file://")):
            raise InvalidMessage(f"reference {msg.uri!r}: expected s3://bucket/key or an absolute path")
        # Checked before fetching: a bad field is dead-lettered (bad_mode...), never retried.
        if msg.mode:
            validation.check_mode(msg.mode)
        if msg.prompt:
            validation.check_prompt(msg.prompt)
        data = self.fetch(msg.uri)
        name = msg.uri.rstrip("/").rsplit("/", 1)[-1]
        self.ingestor.submit(data, name, msg.mode, msg.prompt)
        return []  # the submitted record was published by the ingestor (its own trace)
