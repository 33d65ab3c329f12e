"""The ingest HTTP API (FastAPI; OpenAPI at /docs and /openapi.json).

POST /v1/documents (multipart upload), GET /v1/jobs/{id}, GET /v1/jobs/{id}/result,
POST /v1/jobs/{id}/redecode, the context stores under /v1/context (``ocrstream.compression.http``)
when a registry is given, plus /healthz, /readyz, /metrics. Errors map to HTTP: bad input 4xx with
the reason, dependencies 503.

At the door: API keys are required (``X-API-Key`` or ``Authorization: Bearer``) unless the app is
built ``dev_open``; request bodies are cut off with 413 as soon as they pass the limit (an upload:
``max_bytes`` plus the form's other fields), before they are spooled; every field is checked by
``ocrstream.validation`` (mode, prompt, filename, ids). A submission refused for its content (400,
413, 422) is also recorded on the dead-letter topic.

For routers mounted here: ``app.state.api_keys.dependency`` is the auth dependency, and
``ocrstream.validation.check_mode`` / ``check_prompt`` the field checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY

from ocrstream import validation
from ocrstream.errors import (
    AuthError,
    EmptyDocument,
    NotFound,
    OcrStreamError,
    OversizedDocument,
    PermanentError,
    TransientError,
)
from ocrstream.services.ingest.auth import ApiKeyGate, ApiKeys
from ocrstream.services.ingest.handler import Ingestor
from ocrstream.telemetry import Telemetry

log = logging.getLogger(__name__)

_STATUS = {NotFound: 404, OversizedDocument: 413, EmptyDocument: 422, AuthError: 401}
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields beside the file
CONTEXT_BODY_MAX = 4 * 1024 * 1024  # a context segment is at most 200,000 characters of JSON
UPLOAD = "POST /v1/documents"


def _http_status(exc: OcrStreamError) -> int:
    for cls, code in _STATUS.items():
        if isinstance(exc, cls):
            return code
    return 503 if isinstance(exc, TransientError) else 400


def create_app(
    ingestor: Ingestor,
    telemetry: Telemetry,
    api_keys: tuple[str, ...] = (),
    ready: Callable[[], bool] = lambda: True,
    context: Any = None,
    openai: Any = None,
    console: Any = None,
    *,
    dev_open: bool = False,
    not_ready_detail: Callable[[], str] = lambda: "",
) -> FastAPI:
    """``context``: an ``ocrstream.compression.http.ContextRegistry`` to serve /v1/context; None = off.
    ``openai`` / ``console``: ``OpenAIOptions`` / ``ConsoleOptions`` of the OpenAI-compatible
    /v1/chat/completions and the web console at / (both always served; None = their defaults).
    Without ``api_keys`` this raises unless ``dev_open`` (OCRSTREAM_INGEST_DEV_OPEN).
    ``not_ready_detail``: why /readyz answers 503 (e.g. the topics that are missing).
    Body limits are per route (others mounted here set their own)."""
    keys = ApiKeys(api_keys, dev_open)
    app = FastAPI(
        title="ocrstream ingest", version="1", description="Submit documents for OCR and fetch results."
    )
    app.state.api_keys = keys
    # Checked before the body is read: FastAPI parses a form before it runs dependencies.
    app.add_middleware(ApiKeyGate, keys=keys, prefixes=("/v1/documents", "/v1/jobs", "/v1/context"))
    auth = keys.dependency
    upload_cap = ingestor.max_bytes + FORM_OVERHEAD

    @contextmanager
    def rejecting(origin: str, key: str, fields: dict[str, Any]) -> Iterator[None]:
        """A submission refused for its content goes to the dead-letter topic as well."""
        try:
            yield
        except PermanentError as exc:
            if not isinstance(exc, AuthError):
                record(exc, f"http {origin}", key, fields)
            raise

    def record(exc: PermanentError, origin: str, key: str, fields: dict[str, Any]) -> None:
        try:
            ingestor.dead_letter(exc, origin, key, fields)
        except TransientError as err:  # the client still gets its 4xx; the log keeps the rejection
            log.error("could not dead-letter a rejected request (%s: %s): %s", exc.reason, exc, err)

    @app.exception_handler(OcrStreamError)
    async def _errors(_req, exc: OcrStreamError) -> JSONResponse:  # type: ignore[no-untyped-def]
        return JSONResponse({"reason": exc.reason, "detail": str(exc)}, status_code=_http_status(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_errors(req: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code != 413:
            return await http_exception_handler(req, exc)
        # The body limit cut the request off while it was read; nothing of it was kept.
        limit = req.scope.get(MAX_BODY_SIZE_SCOPE_KEY)
        err = OversizedDocument(
            f"{req.method} {req.url.path}: request body over {limit or 'the limit of'} bytes"
        )
        if req.url.path == "/v1/documents":
            record(err, f"http {UPLOAD}", "", {"content_length": req.headers.get("content-length")})
        return JSONResponse({"reason": err.reason, "detail": str(err)}, status_code=413)

    @app.post("/v1/documents", status_code=202, dependencies=[Depends(auth)], max_body_size=upload_cap)
    async def upload(file: UploadFile = File(...), mode: str = Form(""), prompt: str = Form("")) -> dict:
        name = file.filename or "upload"
        fields = {"filename": name[:300], "mode": mode[:100], "prompt": prompt[:300]}
        with rejecting(UPLOAD, name, fields):
            data = await file.read(ingestor.max_bytes + 1)
            fields["bytes"] = len(data)
            if len(data) > ingestor.max_bytes:
                raise OversizedDocument(f"{name}: more than {ingestor.max_bytes} bytes")
            sub = ingestor.submit(data, name, mode, prompt)
        return {
            "job_id": sub.job_id,
            "doc_id": sub.doc_id,
            "duplicate": sub.duplicate,
            "status": sub.status["status"],
        }

    @app.get("/v1/jobs/{job_id}", dependencies=[Depends(auth)])
    def status(job_id: str) -> dict:
        return ingestor.status(job_id)

    @app.get("/v1/jobs/{job_id}/result", dependencies=[Depends(auth)])
    def result(job_id: str, format: str = "markdown") -> Response:  # noqa: A002 - query parameter name
        if format not in ("markdown", "json"):
            raise validation.BadRequest(f"format {format[:40]!r}: expected markdown or json")
        body = ingestor.result(job_id, format)
        media = "text/markdown; charset=utf-8" if format == "markdown" else "application/json"
        return Response(body, media_type=media)

    @app.post(
        "/v1/jobs/{job_id}/redecode",
        status_code=202,
        dependencies=[Depends(auth)],
        max_body_size=FORM_OVERHEAD,
    )
    def redecode(job_id: str, prompt: str = Form(...), mode: str = Form("")) -> dict:
        fields = {"job_id": job_id[:100], "mode": mode[:100], "prompt": prompt[:300]}
        with rejecting(f"POST /v1/jobs/{job_id[:80]}/redecode", job_id[:100], fields):
            sub = ingestor.redecode(job_id, prompt, mode)
        return {
            "job_id": sub.job_id,
            "doc_id": sub.doc_id,
            "duplicate": sub.duplicate,
            "status": sub.status["status"],
        }

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> PlainTextResponse:
        if ready():
            return PlainTextResponse("ready\n")
        why = not_ready_detail()
        return PlainTextResponse(f"not ready{': ' + why if why else ''}\n", status_code=503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(telemetry.metrics_text(), media_type="text/plain; version=0.0.4")

    if context is not None:
        from ocrstream.compression.http import context_router

        app.include_router(
            context_router(context),
            prefix="/v1",
            dependencies=[Depends(auth)],
            max_body_size=CONTEXT_BODY_MAX,
        )
    from ocrstream.services.ingest.console import mount_console
    from ocrstream.services.ingest.openai_api import OpenAIOptions, openai_router

    app.include_router(openai_router(ingestor, openai or OpenAIOptions(), keys))
    mount_console(app, ingestor, console, dependencies=[Depends(auth)])
    return app
