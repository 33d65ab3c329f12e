"""Decoder step: micro-batches of PageEncoded -> PageDecoded, through the output guard.

Tokens come from the token tiers (Redis, then the store), never from the encoder, except on the
ladder's mode rung (re-encode in another mode, itself cached) or when both tiers lost them; then the
shared encode step (``ocrstream.backends.pages.encode_pages``) runs here. Pages walk the ladder of
``DecodeSettings`` (``ocrstream.guard.read_down_ladder``, as the context API's read-back does).
Each page records its attempts and the final method: ``model``, ``text_layer`` (fallback, flagged)
or ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ocrstream import layout
from ocrstream.backends.base import Decoded, DecoderBackend, EncoderBackend
from ocrstream.backends.pages import encode_pages
from ocrstream.cache.base import unpack_tokens
from ocrstream.cache.tiers import TokenTiers
from ocrstream.errors import NotFound, OcrStreamError, PermanentError, TransientError
from ocrstream.guard import DecodeSettings, PageRead, Rung, agreement, read_down_ladder
from ocrstream.messages import Message, PageDecoded, PageEncoded
from ocrstream.model.grounding import GRID, to_markdown
from ocrstream.services.runtime import Outcome
from ocrstream.store.base import Store
from ocrstream.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass
class _Page(PageRead):
    msg: PageEncoded | None = None
    tokens: bytes | None = None  # backend bytes of the page's own mode
    error: Exception | None = None


class DecoderHandler:
    stage = "decode"
    input_type = PageEncoded

    def __init__(
        self,
        backend: DecoderBackend,
        tiers: TokenTiers,
        store: Store,
        telemetry: Telemetry,
        settings: DecodeSettings,
        encoder: EncoderBackend | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        self.backend = backend
        self.tiers = tiers
        self.store = store
        self.telemetry = telemetry
        self.settings = settings
        self.encoder = encoder  # for the mode rung and lost tokens; None = skip those
        self.checkpoint_dir = checkpoint_dir  # as the encoder's: a lost "auto" page re-encodes alike

    def handle_batch(self, msgs: list[Message], spans: list | None = None) -> list[Outcome]:
        pages = [_Page(m.prompt, msg=m) for m in msgs]  # type: ignore[attr-defined]
        for p in pages:
            try:
                p.tokens = self._tokens(p.msg)
            except OcrStreamError as exc:
                p.error = exc
        try:
            read_down_ladder(
                [p for p in pages if p.error is None],
                self.settings,
                self._decode,
                self._rung_tokens,  # type: ignore[arg-type]
                self._judge,  # type: ignore[arg-type]
            )
        except TransientError as exc:
            return [exc] * len(pages)
        return [p.error if isinstance(p.error, TransientError) else self._finish(p) for p in pages]

    def on_permanent(self, msg: Message, err: Exception) -> list[Message]:
        return []

    # ---- steps ------------------------------------------------------------------------------
    def _tokens(self, m: PageEncoded, mode: str | None = None) -> bytes:
        mode = mode or m.mode
        key = m.tokens_key if mode == m.mode else layout.token_key(m.image_hash, mode, m.weights_id)
        blob = self.tiers.get(key)
        if blob is not None:
            return unpack_tokens(blob)[1]
        if self.encoder is None or not m.allow_encode:
            why = "no encoder in this decoder" if self.encoder is None else "re-decodes never run the encoder"
            raise NotFound(f"vision tokens {key} are in neither the cache nor the store ({why})")
        if mode == m.mode:
            log.warning("tokens %s lost from both tiers; re-encoding page %s/%d", key, m.doc_id, m.page)
        (res,) = encode_pages(
            self.encoder, self.tiers, self.store, self.telemetry, [(m.image_key, mode)], self.checkpoint_dir
        )
        if isinstance(res, Exception):
            raise res
        blob = self.tiers.get(res[0])
        if blob is None:
            raise NotFound(f"vision tokens {res[0]} vanished right after encoding")
        return unpack_tokens(blob)[1]

    def _rung_tokens(self, p: _Page, rung: Rung) -> bytes:
        if rung.mode is None:
            assert p.tokens is not None
            return p.tokens
        assert p.msg is not None
        return self._tokens(p.msg, rung.mode)

    def _decode(self, i: int, rung: Rung, prompt: str, tokens: list[bytes]) -> Sequence[Decoded]:
        with self.telemetry.span("decode batch", rung=i, temperature=rung.temperature, pages=len(tokens)):
            return self.backend.decode(
                tokens,
                prompt=prompt,
                max_new_tokens=self.settings.max_new_tokens,
                temperature=rung.temperature,
                ngram=self.settings.ngram,
            )

    def _judge(self, p: _Page, res: Decoded) -> tuple[str, str]:
        assert p.msg is not None
        if not res.text.strip() and self._text_layer(p.msg):
            # Nothing read from a page whose PDF has text: a failure, not a blank page.
            return "empty", "no text from a page whose PDF text layer is not empty"
        return "ok", ""

    def _finish(self, p: _Page) -> list[Message]:
        m = p.msg
        assert m is not None
        raw = p.best.text if p.best is not None else ""  # kept even when not used: what the model said
        boxes: list[dict] = []
        layer_agreement = -1.0
        if p.done and p.best is not None:
            method, failed = "model", False
            md = to_markdown(raw, m.width or GRID, m.height or GRID)  # tags -> boxes, official clean-up
            text, boxes = md.text, [b.to_dict() for b in md.blocks]
            layer = self._text_layer(m)
            if layer:
                layer_agreement = round(agreement(text, layer), 4)
        else:
            text_layer = self._text_layer(m)
            if text_layer:
                method, text, failed = "text_layer", text_layer, True
            else:
                method, failed = "failed", True
                text = to_markdown(raw, m.width or GRID, m.height or GRID).text
            if p.error is not None:
                p.attempts.append({"outcome": "error", "detail": f"{type(p.error).__name__}: {p.error}"})
        self.telemetry.decoded.labels(method).inc()
        return [
            PageDecoded(
                job_id=m.job_id,
                doc_id=m.doc_id,
                page=m.page,
                n_pages=m.n_pages,
                mode=m.mode,
                prompt=m.prompt,
                text=text,
                method=method,
                raw=raw,
                failed=failed,
                attempts=p.attempts,
                boxes=boxes,
                n_vision_tokens=m.n_vision_tokens,
                n_text_tokens=p.best.n_tokens if p.best is not None and method == "model" else 0,
                cache_hit=m.cache_hit,
                encode_ms=m.encode_ms,
                decode_ms=p.decode_ms,
                text_layer_agreement=layer_agreement,
                width=m.width,
                height=m.height,
            )
        ]

    def _text_layer(self, m: PageEncoded) -> str:
        if not m.text_layer_key:
            return ""
        try:
            return self.store.get(m.text_layer_key).decode("utf-8", "replace").strip()
        except PermanentError:
            return ""
