"""HTTP access to context stores: an APIRouter to mount on any FastAPI app (e.g. the ingest API).

    app.include_router(context_router(ContextRegistry(load_model, store, cache)), prefix="/v1")

POST /context/{name}/segments  {"text": ...}  -> the new segments and the store's stats
GET  /context/{name}                           -> stats (budget, tokens used, segments per mode)
GET  /context/{name}/tokens                    -> kept segments oldest first with their token keys
GET  /context/{name}/text?max_new_tokens=256   -> kept segments read back through the decoder (the
                                                 decoder service's settings and guard; each with
                                                 the guard's outcome and its attempts)

Bounded: at most ``max_stores`` contexts exist in the store (a new name past that is 429
``too_many_contexts``), at most ``max_open`` are held in memory (least recently used ones are
closed, their state is in the store), and a store keeps at most ``max_segments`` segments (an add
that alone renders more pages is 409 ``context_full``; older segments are forgotten past the cap).

Nothing here imports torch at import time: the model is loaded by the registry's loader on the
first request that needs it, so a torch-less service can mount the router and fail that request
with a clear 503 instead of failing to start.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from ocrstream import layout
from ocrstream.errors import NotFound, PermanentError

MAX_SEGMENT_CHARS = 200_000  # one request's text; longer context arrives as several segments
MAX_STORES = 256
MAX_OPEN = 32
MAX_SEGMENTS = 256
# PermanentError reasons of the context stores -> HTTP status.
_LIMITS = {"too_many_contexts": 429, "context_full": 409, "context_conflict": 409}


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
        max_stores: int = MAX_STORES,
        max_open: int = MAX_OPEN,
        max_segments: int = MAX_SEGMENTS,
        decode: Any = None,
    ) -> None:
        """``curve``: the model's CompressionCurve (drops dominated rungs, ranks the rest), or
        ``load_curve`` to read it with the model on the first request. ``max_stores`` contexts in
        the store, ``max_open`` held in memory (LRU), ``max_segments`` per context. ``decode``:
        the ``DecodeSettings`` read-back uses (the pipeline's decoder's; None = the defaults)."""
        self._load_model = load_model
        self._load_curve = load_curve
        self.curve = curve
        self.store = store
        self.cache = cache
        self.budget_tokens = budget_tokens
        self.ladder = ladder
        self.half_life = half_life
        self.max_stores, self.max_open, self.max_segments = max_stores, max(1, max_open), max_segments
        self.decode = decode
        self._model = None
        self._stores: OrderedDict[str, Any] = OrderedDict()  # open stores, least recently used first
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
            if name in self._stores:
                self._stores.move_to_end(name)
                return self._stores[name]
            model = self.model()
            if not self.store.exists(layout.context_manifest_key(name)):
                n = len(self.names())  # counted in the store: other replicas create contexts too
                if n >= self.max_stores:
                    raise PermanentError(
                        f"cannot create context {name!r}: {n} contexts exist, the limit is {self.max_stores}",
                        reason="too_many_contexts",
                    )
            ladder, quality = curve_ladder(model, self.curve)
            cs = ContextStore.open(
                name,
                model,
                self.store,
                self.cache,
                ladder=self.ladder or ladder,
                quality=None if self.ladder else quality,
                budget_tokens=self.budget_tokens,
                half_life=self.half_life,
                max_segments=self.max_segments,
                decode=self.decode,
            )
            self._stores[name] = cs
            while len(self._stores) > self.max_open:
                # Its manifest, pages and tokens are in the store: the next request reopens it.
                self._stores.popitem(last=False)
            return cs

    def names(self) -> list[str]:
        """Contexts in the store (their manifests)."""
        names = (layout.context_name_of_manifest_key(k) for k in self.store.list(layout.CONTEXT_PREFIX))
        return sorted({n for n in names if n})


def _call(fn: Callable[[], Any]) -> Any:
    """Map library errors to HTTP: bad input 422, unknown name 404, limits 429/409, no model 503."""
    try:
        return fn()
    except NotFound as exc:
        raise HTTPException(404, detail={"reason": "not_found", "detail": str(exc)}) from exc
    except PermanentError as exc:
        status = _LIMITS.get(exc.reason, 422)
        raise HTTPException(status, detail={"reason": exc.reason, "detail": str(exc)}) from exc
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
            return {
                "segments": [
                    {
                        **asdict(r.segment),
                        "text": r.text,
                        "stopped": r.stopped,
                        "outcome": r.outcome,
                        "attempts": r.attempts,
                    }
                    for r in rs
                ]
            }

        return _call(run)

    return router


def _brief(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "segments_detail"}
