"""HTTP access to context stores: an APIRouter to mount on any FastAPI app (e.g. the ingest API).

    app.include_router(context_router(ContextRegistry(load_model, store, cache)), prefix="/v1")

POST /context/{name}/segments  {"text": ...}  -> the new segments and the store's stats
GET  /context/{name}                           -> stats (budget, tokens used, segments per mode)
GET  /context/{name}/tokens                    -> kept segments oldest first with their token keys
GET  /context/{name}/text?max_new_tokens=256   -> kept segments read back through the decoder

Nothing here imports torch at import time: the model is loaded by the registry's loader on the
first request that needs it, so a torch-less service can mount the router and fail that request
with a clear 503 instead of failing to start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from ocrstream.errors import NotFound

MAX_SEGMENT_CHARS = 200_000  # one request's text; longer context arrives as several segments


class SegmentIn(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_SEGMENT_CHARS)


class ContextRegistry:
    """Context stores by name over one model, store and cache; created on first use."""

    def __init__(
        self,
        load_model: Callable[[], Any],
        store: Any,
        cache: Any = None,
        budget_tokens: int = 512,
        ladder: list[str] | None = None,
        half_life: float = 4.0,
        curve: Any = None,
        load_curve: Callable[[], Any] | None = None,
    ) -> None:
        """``curve``: the model's CompressionCurve (drops dominated rungs, ranks the rest), or
        ``load_curve`` to read it with the model on the first request."""
        self._load_model = load_model
        self._load_curve = load_curve
        self.curve = curve
        self.store = store
        self.cache = cache
        self.budget_tokens = budget_tokens
        self.ladder = ladder
        self.half_life = half_life
        self._model = None
        self._stores: dict[str, Any] = {}
        self._lock = threading.Lock()

    def model(self) -> Any:
        if self._model is None:
            self._model = self._load_model()
            if self.curve is None and self._load_curve is not None:
                self.curve = self._load_curve()
        return self._model

    def get(self, name: str) -> Any:
        from ocrstream.compression.context_store import ContextStore, curve_ladder

        with self._lock:
            if name not in self._stores:
                model = self.model()
                ladder, quality = curve_ladder(model, self.curve)
                self._stores[name] = ContextStore.open(
                    name,
                    model,
                    self.store,
                    self.cache,
                    ladder=self.ladder or ladder,
                    quality=None if self.ladder else quality,
                    budget_tokens=self.budget_tokens,
                    half_life=self.half_life,
                )
            return self._stores[name]


def _call(fn: Callable[[], Any]) -> Any:
    """Map library errors to HTTP: bad input 422, unknown name 404, no model 503."""
    try:
        return fn()
    except NotFound as exc:
        raise HTTPException(404, detail={"reason": "not_found", "detail": str(exc)}) from exc
    except (FileNotFoundError, ImportError) as exc:  # no checkpoint, or a service image without torch
        raise HTTPException(503, detail={"reason": "model_unavailable", "detail": str(exc)}) from exc
    except ValueError as exc:
        raise HTTPException(422, detail={"reason": "bad_request", "detail": str(exc)}) from exc


def context_router(registry: ContextRegistry) -> APIRouter:
    router = APIRouter(prefix="/context", tags=["context"])

    @router.post("/{name}/segments", status_code=201)
    def add(name: str, body: SegmentIn) -> dict:
        def run() -> dict:
            cs = registry.get(name)
            added = cs.add(body.text)
            return {"added": [asdict(s) for s in added], "stats": _brief(cs.stats())}

        return _call(run)

    @router.get("/{name}")
    def stats(name: str) -> dict:
        return _call(lambda: registry.get(name).stats())

    @router.get("/{name}/tokens")
    def tokens(name: str) -> dict:
        def run() -> dict:
            cs = registry.get(name)
            pairs = cs.read_tokens()
            return {
                "segments": [
                    {
                        **asdict(seg),
                        "key": cs.token_key(seg),
                        "shape": list(vt.embeds.shape),
                        "weights_id": vt.weights_id,
                    }
                    for seg, vt in pairs
                ],
                "total_tokens": sum(vt.n_placeholders for _, vt in pairs),
            }

        return _call(run)

    @router.get("/{name}/text")
    def text(name: str, max_new_tokens: int = 256) -> dict:
        if not 1 <= max_new_tokens <= 4096:
            raise HTTPException(
                422,
                detail={"reason": "bad_request", "detail": f"max_new_tokens {max_new_tokens} not in 1..4096"},
            )

        def run() -> dict:
            rs = registry.get(name).read_text(max_new_tokens=max_new_tokens)
            return {"segments": [{**asdict(r.segment), "text": r.text, "stopped": r.stopped} for r in rs]}

        return _call(run)

    return router


def _brief(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "segments_detail"}
