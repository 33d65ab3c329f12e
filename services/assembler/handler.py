"""Assembler step: PageDecoded -> per-page JSON; when every page of a job is in, the document
(markdown joined by pages + JSON) and a DocumentCompleted event.

Idempotent under redelivery: a page result is one object keyed by (job, page), rewritten by a
duplicate; completion is decided from the set of page objects, not from counting messages; a job
already terminal does not emit a second completion.

Exactly one completion across replicas: the result objects are written first (any replica that
saw every page writes the same ones), then the job status moves to terminal by a compare-and-set
(``Jobs.advance``); only the replica whose write wins emits the DocumentCompleted. A replica
retrying the same page after a failure past that write (the answer lost) finds its own ``rev``
on the record and emits then.

Completion check cost: page objects are never deleted while a job runs, so the pages this process
has seen in the store stay true; each page lists only the keys after the job's contiguous run of
known pages (one short list per page instead of the whole job's prefix: O(n) keys per job, not
O(n^2)). Any replica may handle any page: the list still finds pages other replicas wrote.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict

from ocrstream import layout
from ocrstream.errors import NotFound
from ocrstream.messages import DocumentCompleted, Message, PageDecoded
from ocrstream.services.runtime import SimpleHandler
from ocrstream.store.base import Store, get_json, put_json
from ocrstream.telemetry import Telemetry

log = logging.getLogger(__name__)

KNOWN_JOBS = 4096  # jobs whose seen pages are remembered; an evicted job just lists from the start


def page_marker(page: int) -> str:
    return f"<!-- page {page} -->"


def join_markdown(pages: list[dict]) -> str:
    return "\n\n".join(f"{page_marker(p['page'])}\n\n{p['text'].strip()}" for p in pages) + "\n"


class AssemblerHandler(SimpleHandler):
    stage = "assemble"
    input_type = PageDecoded

    def __init__(self, store: Store, telemetry: Telemetry, degraded_rate: float = 0.1) -> None:
        self.store = store
        self.telemetry = telemetry
        self.degraded_rate = degraded_rate
        self.jobs = layout.Jobs(store)
        self._known: OrderedDict[str, set[int]] = OrderedDict()  # job -> pages seen in the store
        self._claims: OrderedDict[str, str] = OrderedDict()  # job -> rev of our completing write

    def _pages_in_store(self, job_id: str, page: int, n_pages: int) -> set[int]:
        known = self._known.pop(job_id, set())
        known.add(page)
        run = 0  # pages 1..run are all known
        while run + 1 in known:
            run += 1
        if run < n_pages:
            after = layout.page_result_key(job_id, run) if run else ""
            for key in self.store.list(layout.page_result_prefix(job_id), start_after=after):
                if (n := layout.page_of_result_key(key)) is not None:
                    known.add(n)
        self._known[job_id] = known
        while len(self._known) > KNOWN_JOBS:
            self._known.popitem(last=False)
        return known

    def handle(self, msg: PageDecoded) -> list[Message]:  # type: ignore[override]
        page = {
            "page": msg.page,
            "text": msg.text,
            "raw": msg.raw,
            "boxes": msg.boxes,
            "mode": msg.mode,
            "prompt": msg.prompt,
            "method": msg.method,
            "failed": msg.failed,
            "attempts": msg.attempts,
            "tokens": {"vision": msg.n_vision_tokens, "text": msg.n_text_tokens},
            "timings_ms": {"encode": round(msg.encode_ms, 3), "decode": round(msg.decode_ms, 3)},
            "cache_hit": msg.cache_hit,
            "text_layer_agreement": msg.text_layer_agreement,
            "width": msg.width,
            "height": msg.height,
        }
        put_json(self.store, layout.page_result_key(msg.job_id, msg.page), page)
        known = self._pages_in_store(msg.job_id, msg.page, msg.n_pages)
        if len(known) < msg.n_pages:
            return []
        claim = self._claims.get(msg.job_id)
        try:
            status = self.jobs.get(msg.job_id)
        except NotFound:  # pages injected without ingest (re-decode tools, tests): advance creates it
            status = {"status": ""}
        finished = status["status"] in layout.TERMINAL and self.store.exists(layout.result_key(msg.job_id))
        if finished and (not claim or status.get("rev") != claim):
            return []  # a redelivered page of a finished job (unless our own completion's answer was lost)
        keys = [layout.page_result_key(msg.job_id, p) for p in sorted(known)]
        pages = [get_json(self.store, k) for k in keys]
        pages.sort(key=lambda p: p["page"])
        numbers = [p["page"] for p in pages]
        if numbers != list(range(1, msg.n_pages + 1)):
            log.error("job %s has page results %s for %d pages", msg.job_id, numbers, msg.n_pages)
            return []
        failed = [p["page"] for p in pages if p["failed"]]
        state = "degraded" if len(failed) / msg.n_pages > self.degraded_rate else "completed"
        md_key, res_key = layout.markdown_key(msg.job_id), layout.result_key(msg.job_id)
        self.store.put(md_key, join_markdown(pages).encode(), "text/markdown; charset=utf-8")
        result = {
            "job_id": msg.job_id,
            "doc_id": msg.doc_id,
            "status": state,
            "n_pages": msg.n_pages,
            "failed_pages": failed,
            "pages": pages,
        }
        self.store.put(res_key, json.dumps(result, ensure_ascii=False, indent=1).encode(), "application/json")
        if claim is None:
            claim = self._claims[msg.job_id] = uuid.uuid4().hex
            while len(self._claims) > KNOWN_JOBS:
                self._claims.popitem(last=False)
        won = self.jobs.advance(
            msg.job_id,
            state,
            defaults={"doc_id": msg.doc_id, "mode": msg.mode, "prompt": msg.prompt},
            rev=claim,
            failed_pages=failed,
            markdown_key=md_key,
            result_key=res_key,
            n_pages=msg.n_pages,
        )
        self._known.pop(msg.job_id, None)
        self._claims.pop(msg.job_id, None)
        if won is None:
            log.info("job %s was completed by another replica", msg.job_id)
            return []
        log.info("assembled %s: %d pages, %d failed -> %s", msg.job_id, msg.n_pages, len(failed), state)
        return [
            DocumentCompleted(
                job_id=msg.job_id,
                doc_id=msg.doc_id,
                n_pages=msg.n_pages,
                status=state,
                failed_pages=failed,
                markdown_key=md_key,
                result_key=res_key,
            )
        ]
