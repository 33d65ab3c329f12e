"""Encoding pages through the token tiers: the one encode step of the encoder service and of the
decoder's mode rung (and its re-encode of tokens both tiers lost), so neither service imports the
other.

A page's tokens are looked up by (page content hash, mode, encoder weights id): cache first, then
the durable store; a hit skips the encoder. Misses are encoded together (one backend call per mode
in the batch) and written to both tiers. A job in mode ``auto`` gets a mode per page from its text
density (``ocrstream.compression.hooks``).
"""

from __future__ import annotations

import io
import time

from PIL import Image, UnidentifiedImageError

from ocrstream import layout
from ocrstream.backends.base import EncoderBackend
from ocrstream.cache.base import pack_tokens, unpack_tokens
from ocrstream.cache.tiers import TokenTiers
from ocrstream.compression.hooks import resolve_mode
from ocrstream.errors import CorruptDocument, OcrStreamError
from ocrstream.store.base import Store
from ocrstream.telemetry import Telemetry

# per page: (tokens key, cache hit, encode ms, vision tokens) or the exception it failed with
EncodeResult = tuple[str, bool, float, int] | Exception


def encode_pages(
    backend: EncoderBackend,
    tiers: TokenTiers,
    store: Store,
    telemetry: Telemetry,
    pages: list[tuple[str, str]],
    checkpoint_dir: str | None = None,
) -> list[EncodeResult]:
    """Encode ``(image_key, mode)`` pages through the token tiers, one result per page.
    ``checkpoint_dir``: the model folder whose curve mode ``auto`` reads ("" = the shipped model;
    None = OCRSTREAM_CHECKPOINT_DIR)."""
    out: list[EncodeResult | None] = [None] * len(pages)
    misses: dict[str, list[tuple[int, Image.Image, str]]] = {}
    for i, (image_key, mode) in enumerate(pages):
        try:
            png = store.get(image_key)
            key = layout.token_key(layout.sha256(png), mode, backend.weights_id)
            data = tiers.get(key)
            if data is not None:
                out[i] = (key, True, 0.0, unpack_tokens(data)[0])
                continue
            try:
                img = Image.open(io.BytesIO(png)).convert("RGB")
            except (UnidentifiedImageError, OSError) as exc:
                raise CorruptDocument(f"page image {image_key} cannot be decoded: {exc}") from exc
            misses.setdefault(resolve_mode(mode, img, checkpoint_dir, page=image_key), []).append(
                (i, img, key)
            )
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
