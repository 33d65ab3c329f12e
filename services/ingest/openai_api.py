"""OpenAI-compatible OCR: ``POST /v1/chat/completions``, ``GET /v1/models`` (and ``/v1/models/{id}``).

A request is turned into ordinary ingest jobs, so it runs through the same pipeline as an upload
(dedupe by content hash, dead letters, re-decode later) and works wherever an ``Ingestor`` does:
the ingest service over Kafka, and ``ocrstream serve`` over the embedded pipeline.

- Documents: the last user message's content parts, in order. ``image_url`` parts take
  ``data:<mime>;base64,...`` URLs or ``http(s)://`` / ``s3://`` references (through the
  ``ReferencePolicy`` allow-list); ``file`` parts take ``file_data`` as a base64 data URL (a PDF or
  an image). Each document is one job; their pages are answered in order.
- Prompt: from the same message's text: a raw prompt containing ``<image>`` as given, a prompt name
  (``free_ocr``, ``markdown``, ``grounding``, ...), else ``grounding`` / ``markdown`` when the text
  asks for it, else free OCR. Grounding answers keep the model's ``<|ref|>``/``<|det|>`` tags
  (boxes on the 0-999 grid, as DeepSeek-OCR clients expect); other prompts get the page markdown.
- Pages are joined with the official ``<--- Page Split --->`` separator. ``stream: true`` answers
  server-sent events, one ``chat.completion.chunk`` per page, then a finish chunk, a usage chunk
  when ``stream_options.include_usage``, and ``data: [DONE]``.
- usage: prompt_tokens = per page, the vision tokens plus the text prompt's tokens;
  completion_tokens = the tokens of the answers the pages kept (0 for a text-layer fallback page).
- Errors have OpenAI's body ``{"error": {"message", "type", "param", "code"}}`` and a 4xx status
  for bad requests (no image, unknown model, oversized image, bad JSON), 5xx for our side.
- Non-OpenAI extras ride in an ``ocrstream`` field (job ids, per-page method and boxes in page
  pixels); clients ignore unknown fields. ``mode`` may be passed as an extra body field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ocrstream import layout
from ocrstream.errors import (
    AuthError,
    NotFound,
    OcrStreamError,
    OversizedDocument,
    PermanentError,
    TransientError,
)
from ocrstream.model.grounding import PAGE_SPLIT, clean_text
from ocrstream.model.tokenizer import IMAGE_TOKEN, PROMPTS
from ocrstream.services.ingest.auth import ApiKeys
from ocrstream.services.ingest.handler import Ingestor, Submission
from ocrstream.services.ingest.references import ReferencePolicy, fetch_reference
from ocrstream.store.base import get_json

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "ocrstream-embedded"
CHAT = "POST /v1/chat/completions"
# Prompt names a user message may give verbatim ("locate" needs a ref=..., so only as raw text).
PROMPT_NAMES = tuple(n for n, text in PROMPTS.items() if "{" not in text)
RAW_ANSWER_PROMPTS = ("grounding", "ocr", "identify")  # answers keep the grounding tags
_EXT = (
    (b"%PDF", "pdf"),
    (b"\x89PNG", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


@dataclass(frozen=True)
class OpenAIOptions:
    """What the endpoint needs beyond the ingestor; built by the service's wiring."""

    model_names: tuple[str, ...] = (EMBEDDED_MODEL,)
    prompt_tokens: Callable[[str], int] = field(default=lambda prompt: 0)  # text tokens of a prompt
    references: ReferencePolicy = ReferencePolicy()  # default: no remote references
    s3_client: Any = None  # for s3:// references (the ingest's MinIO client)
    timeout_s: float = 600.0  # longest wait for a document's pages
    poll_s: float = 0.2
    max_pixels: int = 40_000_000  # the rasterizer's default page-pixel limit, checked at the door


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, code: str, param: str | None = None, kind: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.kind = kind or _kind(status)
        self.recorded = False  # already on the dead-letter topic (a job the pipeline refused)

    @property
    def refused(self) -> bool:
        """A request refused for what it holds: dead-lettered like a refused upload (not auth)."""
        return 400 <= self.status < 500 and self.status != 401 and not self.recorded

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def _kind(status: int) -> str:
    return {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )


def from_ocrstream_error(exc: OcrStreamError, param: str | None = None) -> ApiError:
    if isinstance(exc, TransientError):
        return ApiError(503, str(exc), exc.reason, param)
    if isinstance(exc, AuthError):
        return ApiError(401, str(exc), exc.reason, param)
    if isinstance(exc, OversizedDocument):
        return ApiError(413, str(exc), exc.reason, param)
    if isinstance(exc, NotFound):
        return ApiError(404, str(exc), exc.reason, param)
    if exc.reason == "reference_not_allowed":
        return ApiError(403, str(exc), exc.reason, param)
    return ApiError(400, str(exc), exc.reason, param)


def _job_failure(rec: dict) -> ApiError:
    reason = rec.get("reason") or "failed"
    code = reason.split(":", 1)[0].strip() or "failed"
    status = 413 if code == "oversized" else 422
    err = ApiError(status, f"document {rec.get('filename', '')!r} failed: {reason}", code, "messages")
    err.recorded = True  # the stage that refused it dead-lettered the record
    return err


# ---- the request ---------------------------------------------------------------------------------
@dataclass
class Document:
    param: str  # where in the request it came from, for error messages
    filename: str
    data: bytes = b""
    uri: str = ""  # a remote reference, fetched after validation


@dataclass
class ChatRequest:
    model: str
    prompt: str
    documents: list[Document]
    stream: bool = False
    include_usage: bool = False
    mode: str = ""


def prompt_for(text: str) -> str:
    """The pipeline prompt a user message's text asks for."""
    t = text.strip()
    if IMAGE_TOKEN in t:
        return t
    if t in PROMPT_NAMES:
        return t
    low = t.lower()
    if "grounding" in low or "bounding box" in low or "boxes" in low:
        return "grounding"
    if "markdown" in low:
        return "markdown"
    return "free_ocr"


def parse_request(raw: bytes, opts: OpenAIOptions, max_bytes: int) -> ChatRequest:
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "you must provide a model parameter", "missing_model", "model")
    if model not in opts.model_names:
        raise ApiError(
            404,
            f"the model {model!r} does not exist; GET /v1/models lists {list(opts.model_names)}",
            "model_not_found",
            "model",
        )
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported", "unsupported_parameter", "n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty array", "invalid_messages", "messages")
    users = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ApiError(400, "messages has no user message", "invalid_messages", "messages")
    idx = users[-1]
    content = messages[idx].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise ApiError(
            400, "content must be a string or an array of parts", "invalid_content", f"messages[{idx}]"
        )
    texts, docs = [], []
    for j, part in enumerate(parts):
        param = f"messages[{idx}].content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            iu = part.get("image_url")
            url = iu.get("url") if isinstance(iu, dict) else iu
            if not isinstance(url, str) or not url:
                raise ApiError(400, "image_url.url is missing", "invalid_image_url", param)
            docs.append(_url_document(url, param, len(docs), opts, max_bytes))
        elif kind == "file":
            f = part.get("file") if isinstance(part.get("file"), dict) else {}
            data_url = f.get("file_data")
            if not isinstance(data_url, str) or not data_url.startswith("data:"):
                raise ApiError(
                    400,
                    "file parts need file_data as a base64 data URL (file ids are not kept)",
                    "invalid_file",
                    param,
                )
            data = _data_url_bytes(data_url, param, max_bytes, "file_too_large")
            name = str(f.get("filename") or f"document-{len(docs) + 1}.pdf")
            docs.append(Document(param, Path(name).name or "document.pdf", _checked(data, param, opts)))
        else:
            raise ApiError(400, f"unsupported content part type {kind!r}", "invalid_content", param)
    if not docs:
        raise ApiError(
            400,
            "the user message has no image: add an image_url part or a file part with a PDF",
            "no_image",
            f"messages[{idx}].content",
        )
    mode = body.get("mode", "")
    if not isinstance(mode, str):
        raise ApiError(400, "mode must be a string", "invalid_mode", "mode")
    so = body.get("stream_options") or {}
    return ChatRequest(
        model=model,
        prompt=prompt_for("\n".join(texts)),
        documents=docs,
        stream=bool(body.get("stream", False)),
        include_usage=bool(isinstance(so, dict) and so.get("include_usage")),
        mode=mode,
    )


def _url_document(url: str, param: str, i: int, opts: OpenAIOptions, max_bytes: int) -> Document:
    if url.startswith("data:"):
        data = _data_url_bytes(url, param, max_bytes, "image_too_large")
        ext = next((e for magic, e in _EXT if data.startswith(magic)), "img")
        return Document(param, f"image-{i + 1}.{ext}", _checked(data, param, opts))
    if url.startswith(("http://", "https://", "s3://")):
        try:
            opts.references.check(url)
        except PermanentError as exc:
            raise from_ocrstream_error(exc, param) from exc
        name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or f"image-{i + 1}"
        return Document(param, name, uri=url)
    raise ApiError(
        400,
        "image_url.url must be a data: URL or an http(s):// or s3:// reference",
        "invalid_image_url",
        param,
    )


def _data_url_bytes(url: str, param: str, max_bytes: int, too_large: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise ApiError(400, "data URLs must be base64 (data:<mime>;base64,...)", "invalid_data_url", param)
    if len(payload) // 4 * 3 > max_bytes + 3:  # decoded size, checked before decoding
        raise ApiError(413, f"{param}: more than {max_bytes} bytes", too_large, param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"{param}: invalid base64: {exc}", "invalid_data_url", param) from exc
    if not data:
        raise ApiError(400, f"{param}: empty document", "empty", param)
    if len(data) > max_bytes:
        raise ApiError(413, f"{param}: {len(data)} bytes, limit {max_bytes}", too_large, param)
    return data


def _checked(data: bytes, param: str, opts: OpenAIOptions) -> bytes:
    """A PDF as it is (the rasterizer checks it); an image's pixel count from its header."""
    if data.startswith(b"%PDF"):
        return data
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            w, h = img.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ApiError(
            400, f"{param}: not a PDF or a readable image ({exc})", "invalid_image", param
        ) from exc
    if w * h > opts.max_pixels:
        raise ApiError(
            413, f"{param}: {w}x{h} = {w * h} pixels, limit {opts.max_pixels}", "image_too_large", param
        )
    return data


# ---- answers ---------------------------------------------------------------------------------------
def page_content(page: dict, prompt: str) -> str:
    raw_answer = prompt in RAW_ANSWER_PROMPTS or (IMAGE_TOKEN in prompt and "<|grounding|>" in prompt)
    if raw_answer and page.get("method") == "model":
        return clean_text(page.get("raw", ""), collapse_newlines=False)
    return page.get("text", "")


class _Usage:
    def __init__(self, text_prompt_tokens: int) -> None:
        self.text_prompt = text_prompt_tokens
        self.prompt = self.completion = 0

    def add(self, page: dict) -> None:
        tokens = page.get("tokens", {})
        self.prompt += int(tokens.get("vision", 0)) + self.text_prompt
        self.completion += int(tokens.get("text", 0))

    def body(self) -> dict:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        }


def _page_extra(job_id: str, page: dict) -> dict:
    return {
        "job_id": job_id,
        "page": page["page"],
        "method": page.get("method", ""),
        "boxes": page.get("boxes", []),
        "cache_hit": page.get("cache_hit", False),
    }


class _Waiter:
    """Follows jobs through the store: the same in the ingest service and in ``ocrstream serve``.
    Async between polls, so a long document holds no worker thread while it waits; each store
    read runs in the thread pool (S3 calls block)."""

    def __init__(self, ingestor: Ingestor, opts: OpenAIOptions, deadline: float) -> None:
        self.ing, self.opts, self.deadline = ingestor, opts, deadline

    async def _sleep(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise ApiError(
                504, f"{what} not finished within {self.opts.timeout_s:.0f}s; the job goes on", "timeout"
            )
        await asyncio.sleep(self.opts.poll_s)

    async def _job(self, job_id: str) -> dict:
        rec = await run_in_threadpool(self.ing.jobs.get, job_id)
        if rec["status"] == "failed":
            raise _job_failure(rec)
        return rec

    async def started(self, job_id: str) -> dict:
        """The job once rasterized (pages known) or terminal; failed -> its error."""
        while (rec := await self._job(job_id))["status"] == "submitted":
            await self._sleep(f"job {job_id}")
        return rec

    async def finished(self, job_id: str) -> dict:
        while (await self._job(job_id))["status"] not in layout.TERMINAL:
            await self._sleep(f"job {job_id}")
        return await run_in_threadpool(get_json, self.ing.store, layout.result_key(job_id))

    async def page(self, job_id: str, page: int) -> dict:
        key = layout.page_result_key(job_id, page)
        while not await run_in_threadpool(self.ing.store.exists, key):
            await self._job(job_id)
            await self._sleep(f"page {page} of job {job_id}")
        return await run_in_threadpool(get_json, self.ing.store, key)


def _sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


def openai_router(ingestor: Ingestor, opts: OpenAIOptions, keys: ApiKeys) -> APIRouter:
    """The routes; ``keys``: the ingest app's API keys (OpenAI clients send them as Bearer tokens)."""
    router = APIRouter(tags=["openai"])
    # A request carries at most one largest document, base64-encoded, plus its JSON.
    body_cap = ingestor.max_bytes * 4 // 3 + 1024 * 1024

    def unauthorized(authorization: str | None, x_api_key: str | None) -> JSONResponse | None:
        if keys.accepts_headers(x_api_key, authorization):
            return None
        return ApiError(401, "missing or unknown API key", "invalid_api_key").response()

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": 0, "owned_by": "ocrstream"}

    @router.get("/v1/models")
    def models(
        authorization: str | None = Header(default=None), x_api_key: str | None = Header(default=None)
    ) -> Any:
        return unauthorized(authorization, x_api_key) or {
            "object": "list",
            "data": [model_card(n) for n in opts.model_names],
        }

    @router.get("/v1/models/{model_id:path}")
    def model(
        model_id: str,
        authorization: str | None = Header(default=None),
        x_api_key: str | None = Header(default=None),
    ) -> Any:
        if (denied := unauthorized(authorization, x_api_key)) is not None:
            return denied
        if model_id not in opts.model_names:
            return ApiError(
                404, f"the model {model_id!r} does not exist", "model_not_found", "model"
            ).response()
        return model_card(model_id)

    @router.post("/v1/chat/completions")
    async def chat_completions(
        request: Request,
        authorization: str | None = Header(default=None),
        x_api_key: str | None = Header(default=None),
    ) -> Any:
        if (denied := unauthorized(authorization, x_api_key)) is not None:
            return denied
        try:
            raw = await _read_capped(request, body_cap)
            req = parse_request(raw, opts, ingestor.max_bytes)
            subs = await run_in_threadpool(_submit_all, ingestor, opts, req)
            waiter = _Waiter(ingestor, opts, time.monotonic() + opts.timeout_s)
            if req.stream:
                # Wait for the pages to be known so a broken document still gets a plain 4xx.
                recs = [await waiter.started(s.job_id) for s in subs]
                events = _events(req, subs, recs, waiter, opts)
                return StreamingResponse(
                    events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
                )
            results = [await waiter.finished(s.job_id) for s in subs]
            return _completion(req, subs, results, opts)
        except OcrStreamError as exc:
            err = from_ocrstream_error(exc)
        except ApiError as exc:
            err = exc
        if err.refused:
            await run_in_threadpool(_dead_letter, ingestor, err)
        return err.response()

    return router


def _dead_letter(ingestor: Ingestor, err: ApiError) -> None:
    fields = {"status": err.status, "code": err.code, "param": err.param}
    ingestor.dead_letter(
        PermanentError(err.message, reason=err.code), f"http {CHAT}", err.param or "", fields
    )


async def _read_capped(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ApiError(
            413, f"request body of {declared} bytes is over the limit of {cap}", "request_too_large"
        )
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > cap:  # stop reading: never spool an unbounded body
            raise ApiError(413, f"request body is over the limit of {cap} bytes", "request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _submit_all(ingestor: Ingestor, opts: OpenAIOptions, req: ChatRequest) -> list[Submission]:
    subs = []
    for doc in req.documents:
        try:
            if doc.uri:
                doc.data = _checked(
                    fetch_reference(doc.uri, opts.references, ingestor.max_bytes, opts.s3_client),
                    doc.param,
                    opts,
                )
            subs.append(ingestor.submit(doc.data, doc.filename, req.mode, req.prompt))
        except OcrStreamError as exc:
            raise from_ocrstream_error(exc, doc.param) from exc
    return subs


def _completion(req: ChatRequest, subs: list[Submission], results: list[dict], opts: OpenAIOptions) -> dict:
    usage = _Usage(opts.prompt_tokens(req.prompt))
    texts, extra = [], []
    for sub, result in zip(subs, results, strict=True):
        for page in result["pages"]:
            usage.add(page)
            texts.append(page_content(page, req.prompt))
            extra.append(_page_extra(sub.job_id, page))
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": PAGE_SPLIT.join(texts)},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage.body(),
        "ocrstream": {"prompt": req.prompt, "job_ids": [s.job_id for s in subs], "pages": extra},
    }


async def _events(
    req: ChatRequest, subs: list[Submission], recs: list[dict], waiter: _Waiter, opts: OpenAIOptions
) -> AsyncIterator[str]:
    """One chunk per page, as pages finish."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    usage = _Usage(opts.prompt_tokens(req.prompt))

    def chunk(delta: dict, finish: str | None = None, extra: dict | None = None) -> dict:
        out = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if extra is not None:
            out["ocrstream"] = extra
        return out

    first = True
    try:
        for sub, rec in zip(subs, recs, strict=True):
            for n in range(1, int(rec.get("n_pages") or 0) + 1):
                page = await waiter.page(sub.job_id, n)
                usage.add(page)
                text = page_content(page, req.prompt)
                delta = {"role": "assistant", "content": text} if first else {"content": PAGE_SPLIT + text}
                first = False
                yield _sse(chunk(delta, extra=_page_extra(sub.job_id, page)))
            # pages stream as they are decoded, the document is assembled a moment later: the
            # stream ends once it is, so a client may fetch the job's result right after [DONE]
            await waiter.finished(sub.job_id)
    except ApiError as exc:
        yield _sse(exc.body())  # the client raises it; the stream ends without [DONE]
        return
    except OcrStreamError as exc:
        yield _sse(from_ocrstream_error(exc).body())
        return
    yield _sse(chunk({} if not first else {"role": "assistant", "content": ""}, finish="stop"))
    if req.include_usage:
        yield _sse({**chunk({}), "choices": [], "usage": usage.body()})
    yield _sse("[DONE]")


# ---- wiring helpers ----------------------------------------------------------------------------------
def checkpoint_model_names(checkpoint_dir: str = "", embedded: bool = False) -> tuple[str, ...]:
    """The names ``GET /v1/models`` lists: ``ocrstream-embedded`` for the embedded pipeline or the
    shipped model, and the checkpoint's own name (``_name_or_path`` in its config.json, else the
    folder name)."""
    folder = Path(checkpoint_dir) if checkpoint_dir else shipped_model_dir()
    name = folder.name
    with contextlib.suppress(OSError, ValueError):  # no or odd config.json: the folder name
        name = json.loads((folder / "config.json").read_text()).get("_name_or_path") or name
    names = [EMBEDDED_MODEL] if embedded or not checkpoint_dir else []
    return tuple(dict.fromkeys([*names, name]))


def shipped_model_dir() -> Path:
    # ocrstream.model.runtime.SHIPPED_MODEL_DIR, without importing torch (the ingest image has none).
    import ocrstream

    return Path(ocrstream.__file__).resolve().parent / "assets" / "model"


class TokenizerPromptTokens:
    """prompt -> its text tokens (BOS + the text around ``<image>``), as the model builds them.

    The tokenizer loads on first use from the checkpoint folder; where it cannot (no ``tokenizers``
    package, no tokenizer.json) usage counts the vision tokens only, with one logged error."""

    def __init__(self, checkpoint_dir: str = "", tokenizer: Any = None) -> None:
        self.folder = Path(checkpoint_dir) if checkpoint_dir else shipped_model_dir()
        self._tok, self._failed = tokenizer, False
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def __call__(self, prompt: str) -> int:
        with self._lock:
            if prompt not in self._counts:
                self._counts[prompt] = self._count(prompt)
            return self._counts[prompt]

    def _count(self, prompt: str) -> int:
        from ocrstream.model.tokenizer import OcrTokenizer, resolve_prompt

        if self._tok is None and not self._failed:
            try:
                self._tok = OcrTokenizer.from_file(self.folder)
            except (ImportError, OSError, ValueError) as exc:
                self._failed = True
                log.error("usage counts vision tokens only: no tokenizer from %s (%s)", self.folder, exc)
        if self._tok is None:
            return 0
        try:
            text = resolve_prompt(prompt)
        except ValueError:
            return 0
        return len(self._tok.build_input_ids(text, [0] * text.count(IMAGE_TOKEN)))
