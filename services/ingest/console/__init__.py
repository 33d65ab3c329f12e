"""The web console: one static page (``/``, plain HTML + JS, no build step) and the few read
endpoints it needs beyond the ingest API (``/v1/console/...``).

The page uploads through ``POST /v1/documents``, polls ``GET /v1/console/jobs/{id}`` for page
results as they land, shows each page image (``.../pages/{n}/image``) beside its markdown, draws the
page result's grounding boxes over the image on demand, re-decodes with another prompt through
``POST /v1/jobs/{id}/redecode`` (tokens from the cache, no encoder call) and downloads the
result as markdown or JSON. ``GET /v1/console/info`` reports the encoder call counter where the
process has one (``ocrstream serve``), so the page can show that a re-decode did not encode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from ocrstream import layout
from ocrstream.errors import NotFound, PermanentError
from ocrstream.services.ingest.handler import Ingestor
from ocrstream.store.base import get_json

STATIC = Path(__file__).resolve().parent / "static"
PROMPTS = ("free_ocr", "markdown", "grounding")  # offered in the page's prompt pickers


@dataclass(frozen=True)
class ConsoleOptions:
    encode_calls: Callable[[], int] | None = None  # pages the in-process encoder has run; None = remote


def console_router(ingestor: Ingestor, opts: ConsoleOptions) -> APIRouter:
    router = APIRouter(prefix="/v1/console", tags=["console"])

    @router.get("/info")
    def info() -> dict:
        calls = opts.encode_calls() if opts.encode_calls is not None else None
        return {"encode_calls": calls, "prompts": list(PROMPTS), "max_bytes": ingestor.max_bytes}

    @router.get("/jobs/{job_id}")
    def job(job_id: str, exclude: str = "") -> dict:
        """The job's status and the page results so far, less the pages the page already has."""
        rec = ingestor.status(job_id)
        have = _page_numbers(exclude)
        pages = []
        for key in ingestor.store.list(layout.page_result_prefix(job_id)):
            n = layout.page_of_result_key(key)
            if n is not None and n not in have:
                pages.append(get_json(ingestor.store, key))
        pages.sort(key=lambda p: p["page"])
        return {"job": rec, "pages": pages}

    @router.get("/jobs/{job_id}/pages/{page}/image")
    def page_image(job_id: str, page: int) -> Response:
        rec = ingestor.jobs.get(job_id)
        if page < 1 or (rec.get("n_pages") and page > rec["n_pages"]):
            raise NotFound(f"job {job_id} has no page {page}")
        key = layout.page_image_key(rec["doc_id"], rec["mode"], page)
        return Response(
            ingestor.store.get(key), media_type="image/png", headers={"Cache-Control": "max-age=3600"}
        )

    return router


def _page_numbers(raw: str) -> set[int]:
    try:
        return {int(x) for x in raw.split(",") if x.strip()}
    except ValueError as exc:
        raise PermanentError(f"exclude={raw[:80]!r}: expected page numbers", reason="bad_request") from exc


def mount_console(
    app: FastAPI, ingestor: Ingestor, opts: ConsoleOptions | None = None, dependencies: Sequence[Any] = ()
) -> None:
    """The page at ``/`` and its files (public: they hold no data), the endpoints under the API's auth."""
    app.include_router(console_router(ingestor, opts or ConsoleOptions()), dependencies=list(dependencies))
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")
