"""Encoder step: micro-batches of PageRasterized -> PageEncoded.

Vision tokens are looked up by (page content hash, mode, encoder weights id): Redis first, then
the durable store; a hit skips the encoder. Misses are encoded together (one backend call per
mode in the batch) and written to both tiers. The per-page ``encoded`` record is what a
re-decode later reads to go straight to the decoder.
"""

from __future__ import annotations

import io
import logging
import time

from ocrstream.services import layout
from ocrstream.services.runtime import Outcome
from PIL import Image, UnidentifiedImageError

from ocrstream.backends.base import EncoderBackend
from ocrstream.cache.base import Cache, pack_tokens, token_key, unpack_tokens
from ocrstream.compression.hooks import resolve_mode
from ocrstream.errors import CorruptDocument, NotFound, OcrStreamError, TransientError
from ocrstream.messages import Message, PageEncoded, PageRasterized
from ocrstream.store.base import Store, put_json
from ocrstream.telemetry import Telemetry

log = logging.getLogger(__name__)


class TokenTiers:
    """Redis (fast, TTL, LRU) in front of the durable store (MinIO / local folder)."""

    def __init__(self, cache: Cache, store: Store, telemetry: Telemetry, ttl_s: int | None = None) -> None:
        self.cache, self.store, self.telemetry, self.ttl_s = cache, store, telemetry, ttl_s

    def get(self, key: str) -> bytes | None:
        try:
            data = self.cache.get(key)
        except TransientError as exc:
            log.warning("token cache unavailable, using the store: %s", exc)
            data = None
        if data is not None:
            self.telemetry.cache.labels("hit").inc()
            return data
        try:
            data = self.store.get(key)
        except NotFound:
            self.telemetry.cache.labels("miss").inc()
            return None
        self.telemetry.cache.labels("hit").inc()
        self._cache_set(key, data)
        return data

    def put(self, key: str, data: bytes) -> None:
        self.store.put(key, data)  # durable first: the cache may evict any time
        self._cache_set(key, data)

    def _cache_set(self, key: str, data: bytes) -> None:
        try:
            self.cache.set(key, data, self.ttl_s)
        except TransientError as exc:
            log.warning("token cache write skipped: %s", exc)


def encode_pages(
    backend: EncoderBackend,
    tiers: TokenTiers,
    store: Store,
    telemetry: Telemetry,
    pages: list[tuple[str, str]],
) -> list[tuple[str, bool, float, int] | Exception]:
    """Encode ``(image_key, mode)`` pages through the token tiers.

    Returns per page ``(tokens_key, cache_hit, encode_ms, n_vision_tokens)`` or the exception it
    failed with. Shared by the encoder service and the decoder's mode-fallback rung."""
    out: list[tuple[str, bool, float, int] | Exception | None] = [None] * len(pages)
    misses: dict[str, list[tuple[int, Image.Image, str]]] = {}
    for i, (image_key, mode) in enumerate(pages):
        try:
            png = store.get(image_key)
            key = token_key(layout.sha256(png), mode, backend.weights_id)
            data = tiers.get(key)
            if data is not None:
                out[i] = (key, True, 0.0, unpack_tokens(data)[0])
                continue
            try:
                img = Image.open(io.BytesIO(png)).convert("RGB")
            except (UnidentifiedImageError, OSError) as exc:
                raise CorruptDocument(f"page image {image_key} cannot be decoded: {exc}") from exc
            # compression: a job in mode "auto" gets a mode per page from its text density
            misses.setdefault(resolve_mode(mode, img, page=image_key), []).append((i, img, key))
        except OcrStreamError as exc:
            out[i] = exc
    for mode, items in misses.items():
        t0 = time.perf_counter()
        try:
            with telemetry.span("encode batch", mode=mode, pages=len(items)):
                encoded = backend.encode([img for _, img, _ in items], mode)
        except Exception as exc:  # noqa: BLE001 - reported per page, classified by the worker
            for i, _, _ in items:
                out[i] = exc
            continue
        ms = (time.perf_counter() - t0) * 1000 / len(items)
        telemetry.encoder_calls.inc(len(items))
        for (i, _, key), enc in zip(items, encoded, strict=True):
            try:
                tiers.put(key, pack_tokens(enc.data, enc.n_vision_tokens))
                out[i] = (key, False, ms, enc.n_vision_tokens)
            except OcrStreamError as exc:
                out[i] = exc
    return out  # type: ignore[return-value]


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
    ):
        self.backend = backend
        self.store = store
        self.telemetry = telemetry
        self.tiers = TokenTiers(cache, store, telemetry, ttl_s)

    def handle_batch(self, msgs: list[Message], spans: list | None = None) -> list[Outcome]:
        pages = [(m.image_key, m.mode) for m in msgs]  # type: ignore[attr-defined]
        results = encode_pages(self.backend, self.tiers, self.store, self.telemetry, pages)
        out: list[Outcome] = []
        for m, res in zip(msgs, results, strict=True):
            assert isinstance(m, PageRasterized)
            if isinstance(res, Exception):
                out.append(res)
                continue
            key, hit, ms, n_vt = res
            try:
                put_json(
                    self.store,
                    layout.encoded_key(m.doc_id, m.mode, m.page),
                    {
                        "page": m.page,
                        "n_pages": m.n_pages,
                        "tokens_key": key,
                        "weights_id": self.backend.weights_id,
                        "image_key": m.image_key,
                        "image_hash": m.image_hash,
                        "text_layer_key": m.text_layer_key,
                        "n_vision_tokens": n_vt,
                    },
                )
            except OcrStreamError as exc:
                out.append(exc)
                continue
            out.append(
                [
                    PageEncoded(
                        job_id=m.job_id,
                        doc_id=m.doc_id,
                        page=m.page,
                        n_pages=m.n_pages,
                        tokens_key=key,
                        image_key=m.image_key,
                        image_hash=m.image_hash,
                        mode=m.mode,
                        prompt=m.prompt,
                        weights_id=self.backend.weights_id,
                        text_layer_key=m.text_layer_key,
                        n_vision_tokens=n_vt,
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
