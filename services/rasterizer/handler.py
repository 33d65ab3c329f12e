"""Rasterizer step: DocumentSubmitted -> one PageRasterized per page (``ocrstream.raster``).

Page images and text layers go to the store; the messages carry their keys. Bad documents
raise a PermanentError (dead-lettered by the worker) and ``on_permanent`` marks the job failed
with that reason and emits a failed DocumentCompleted.
"""

from __future__ import annotations

import logging

from ocrstream import layout
from ocrstream.errors import CorruptDocument, PermanentError
from ocrstream.messages import DocumentCompleted, DocumentSubmitted, Message, PageRasterized
from ocrstream.raster import Limits, png_bytes, rasterize
from ocrstream.services.runtime import SimpleHandler
from ocrstream.store.base import Store, put_json
from ocrstream.telemetry import Telemetry

log = logging.getLogger(__name__)


class RasterizerHandler(SimpleHandler):
    stage = "rasterize"
    input_type = DocumentSubmitted

    def __init__(self, store: Store, telemetry: Telemetry, limits: Limits | None = None) -> None:
        self.store = store
        self.telemetry = telemetry
        self.limits = limits or Limits()
        self.jobs = layout.Jobs(store)

    def handle(self, msg: DocumentSubmitted) -> list[Message]:  # type: ignore[override]
        data = self.store.get(msg.source_key)
        n, pages = rasterize(data, self.limits)
        out: list[Message] = []
        manifest = []
        # Rendering raises CorruptDocument midway for a broken page: no page message is
        # published unless all pages rendered (outputs are published only on return).
        for p in pages:
            png = png_bytes(p.image)
            image_hash = layout.sha256(png)
            image_key = layout.page_image_key(msg.doc_id, msg.mode, p.number)
            self.store.put(image_key, png, "image/png")
            tkey = ""
            if p.text_layer:
                tkey = layout.text_layer_key(msg.doc_id, p.number)
                self.store.put(tkey, p.text_layer.encode(), "text/plain; charset=utf-8")
            w, h = p.image.size
            manifest.append(
                {"page": p.number, "image_key": image_key, "image_hash": image_hash, "text_layer_key": tkey}
            )
            out.append(
                PageRasterized(
                    job_id=msg.job_id,
                    doc_id=msg.doc_id,
                    page=p.number,
                    n_pages=n,
                    image_key=image_key,
                    image_hash=image_hash,
                    mode=msg.mode,
                    prompt=msg.prompt,
                    text_layer_key=tkey,
                    width=w,
                    height=h,
                )
            )
        if len(out) != n:
            raise CorruptDocument(f"document announced {n} pages but {len(out)} could be read")
        put_json(
            self.store, layout.page_manifest_key(msg.doc_id, msg.mode), {"n_pages": n, "pages": manifest}
        )
        self.jobs.advance(msg.job_id, "rasterized", n_pages=n)
        log.info("rasterized %s: %d pages", msg.doc_id, n)
        return out

    def on_permanent(self, msg: Message, err: PermanentError) -> list[Message]:
        assert isinstance(msg, DocumentSubmitted)
        reason = f"{err.reason}: {err}"
        if self.jobs.exists(msg.job_id):
            self.jobs.advance(msg.job_id, "failed", reason=reason)
        return [
            DocumentCompleted(job_id=msg.job_id, doc_id=msg.doc_id, n_pages=0, status="failed", reason=reason)
        ]
