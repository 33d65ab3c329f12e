"""The ingest HTTP API (FastAPI; OpenAPI at /docs and /openapi.json).

POST /v1/documents (multipart upload), GET /v1/jobs/{id}, GET /v1/jobs/{id}/result,
POST /v1/jobs/{id}/redecode, the context stores under /v1/context (``ocrstream.compression.http``)
when a registry is given, plus /healthz, /readyz, /metrics. API-key auth by ``X-API-Key``
when keys are configured. Errors map to HTTP: bad input 4xx with the reason, dependencies 503.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ocrstream.services.ingest.handler import Ingestor

from ocrstream.errors import (
    AuthError,
    EmptyDocument,
    NotFound,
    OcrStreamError,
    OversizedDocument,
    PermanentError,
    TransientError,
)
from ocrstream.telemetry import Telemetry

_STATUS = {NotFound: 404, OversizedDocument: 413, EmptyDocument: 422, AuthError: 401}


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
) -> FastAPI:
    """``context``: an ``ocrstream.compression.http.ContextRegistry`` to serve /v1/context; None = off."""
    app = FastAPI(
        title="ocrstream ingest", version="1", description="Submit documents for OCR and fetch results."
    )

    def auth(x_api_key: str | None = Header(default=None)) -> None:
        if api_keys and x_api_key not in api_keys:
            raise HTTPException(
                401, detail={"reason": "unauthorized", "detail": "missing or unknown X-API-Key"}
            )

    @app.exception_handler(OcrStreamError)
    async def _errors(_req, exc: OcrStreamError) -> JSONResponse:  # type: ignore[no-untyped-def]
        return JSONResponse({"reason": exc.reason, "detail": str(exc)}, status_code=_http_status(exc))

    @app.post("/v1/documents", status_code=202, dependencies=[Depends(auth)])
    async def upload(file: UploadFile = File(...), mode: str = Form(""), prompt: str = Form("")) -> dict:
        data = await file.read(ingestor.max_bytes + 1)
        if len(data) > ingestor.max_bytes:
            raise OversizedDocument(f"{file.filename}: more than {ingestor.max_bytes} bytes")
        sub = ingestor.submit(data, file.filename or "upload", mode, prompt)
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
            raise PermanentError(f"format {format!r}: expected markdown or json", reason="bad_request")
        body = ingestor.result(job_id, format)
        media = "text/markdown; charset=utf-8" if format == "markdown" else "application/json"
        return Response(body, media_type=media)

    @app.post("/v1/jobs/{job_id}/redecode", status_code=202, dependencies=[Depends(auth)])
    def redecode(job_id: str, prompt: str = Form(...), mode: str = Form("")) -> dict:
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
        ok = ready()
        return PlainTextResponse("ready\n" if ok else "not ready\n", status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(telemetry.metrics_text(), media_type="text/plain; version=0.0.4")

    if context is not None:
        from ocrstream.compression.http import context_router

        app.include_router(context_router(context), prefix="/v1", dependencies=[Depends(auth)])
    return app
