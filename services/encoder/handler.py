"""Encoder step: micro-batches of PageRasterized -> PageEncoded.

Pages are encoded through the token tiers (``ocrstream.backends.pages.encode_pages``: a cached page
skips the encoder). Each page's ``TokenRecord`` is stored at ``layout.encoded_key``: what a
re-decode later reads to go straight to the decoder.
"""

from __future__ import annotations

import logging

from ocrstream import layout
from ocrstream.backends.base import EncoderBackend
from ocrstream.backends.pages import encode_pages
from ocrstream.cache.base import Cache
from ocrstream.cache.tiers import TokenTiers
from ocrstream.errors import OcrStreamError
from ocrstream.messages import Message, PageRasterized, TokenRecord
from ocrstream.services.runtime import Outcome
from ocrstream.store.base import Store, put_json
from ocrstream.telemetry import Telemetry

log = logging.getLogger(__name__)


class EncoderHandler:
    stage = "encode"
    input_type = PageRasterized

    def __init__(
        self,
        backend: EncoderBackend,
        cache: Cache,
        store: Store,
        telemetry: Telemetry,
        ttl_s: int | None = None,
        checkpoint_dir: str | None = None,
    ):
        self.backend = backend
        self.checkpoint_dir = checkpoint_dir  # the model folder (its curve serves mode "auto")
        self.store = store
        self.telemetry = telemetry
        self.tiers = TokenTiers(cache, store, telemetry, ttl_s)

    def handle_batch(self, msgs: list[Message], spans: list | None = None) -> list[Outcome]:
        pages = [(m.image_key, m.mode) for m in msgs]  # type: ignore[attr-defined]
        results = encode_pages(
            self.backend, self.tiers, self.store, self.telemetry, pages, self.checkpoint_dir
        )
        out: list[Outcome] = []
        for m, res in zip(msgs, results, strict=True):
            assert isinstance(m, PageRasterized)
            if isinstance(res, Exception):
                out.append(res)
                continue
            key, hit, ms, n_vt = res
            record = TokenRecord(
                page=m.page,
                n_pages=m.n_pages,
                tokens_key=key,
                weights_id=self.backend.weights_id,
                image_key=m.image_key,
                image_hash=m.image_hash,
                text_layer_key=m.text_layer_key,
                n_vision_tokens=n_vt,
            )
            try:
                put_json(self.store, layout.encoded_key(m.doc_id, m.mode, m.page), record.to_record())
            except OcrStreamError as exc:
                out.append(exc)
                continue
            out.append(
                [
                    record.encoded(
                        m.job_id,
                        m.doc_id,
                        m.mode,
                        m.prompt,
                        cache_hit=hit,
                        encode_ms=ms,
                        width=m.width,
                        height=m.height,
                    )
                ]
            )
        return out

    def on_permanent(self, msg: Message, err: Exception) -> list[Message]:
        return []
