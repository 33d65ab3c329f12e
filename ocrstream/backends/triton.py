"""Decoder backend on Triton Inference Server (``OCRSTREAM_DECODER_BACKEND=triton``).

Implements ``ocrstream.backends.base.DecoderBackend`` with tritonclient over gRPC: one streaming
request per page on a bidirectional stream, many pages in flight (bounded), a deadline per call,
and pages that got an error or no final response resent up to ``retries`` times. Connection and
server failures become ``BackendUnavailable`` (transient: the worker retries the batch); a request
the model refuses as malformed becomes ``PermanentError``. Settings: ``TritonClientConfig``.
"""

from __future__ import annotations

import logging
import queue
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ocrstream.backends.base import Decoded
from ocrstream.config import TritonClientConfig
from ocrstream.errors import BackendUnavailable, PermanentError
from ocrstream.model.runtime import join_views, view_blobs

log = logging.getLogger(__name__)

__all__ = ["TritonClientConfig", "TritonDecoder"]


@dataclass
class _Page:
    index: int
    blobs: list[bytes]
    tokens: list[int] = field(default_factory=list)
    final: Decoded | None = None
    error: str = ""


class TritonDecoder:
    def __init__(self, url: str, config: TritonClientConfig | None = None, **overrides: object) -> None:
        self.url = url
        self.cfg = config or TritonClientConfig.from_env(**overrides)

    # ---- DecoderBackend -----------------------------------------------------------------------
    def decode(
        self,
        tokens: list[bytes],
        prompt: str,
        max_new_tokens: int,
        temperature: float = 0.0,
        ngram: tuple[int, int] | None = None,
    ) -> list[Decoded]:
        # a reflowed page is several views, each its own request; joined again below
        flat, owner, reflowed = [], [], set()
        for i, blob in enumerate(tokens):
            views = view_blobs(blob)
            if views is None:
                flat.append(blob)
                owner.append(i)
            else:
                reflowed.add(i)
                flat += views
                owner += [i] * len(views)
        pages = [_Page(i, [b]) for i, b in enumerate(flat)]
        todo = pages
        for attempt in range(self.cfg.triton_retries + 1):
            self._run(todo, prompt, max_new_tokens, temperature, ngram, stream=False)
            todo = [p for p in pages if p.final is None]
            if not todo:
                break
            bad = [p.error for p in todo if "bad request" in p.error]
            if bad:
                raise PermanentError(f"Triton decoder refused the request: {bad[0]}")
            log.warning(
                "%d of %d pages without a result (attempt %d): %s",
                len(todo),
                len(pages),
                attempt + 1,
                todo[0].error,
            )
        if todo:
            raise BackendUnavailable(
                f"Triton decoder at {self.url}: {len(todo)} pages failed: {todo[0].error}"
            )
        parts: list[list[Decoded]] = [[] for _ in tokens]
        for i, p in zip(owner, pages, strict=True):
            parts[i].append(p.final)  # type: ignore[arg-type]
        out = []
        for i, views in enumerate(parts):
            if i not in reflowed:
                out.append(views[0])
                continue
            ids = [t for d in views for t in d.token_ids]
            out.append(
                Decoded(join_views([d.text for d in views]), ids, all(d.stopped for d in views), len(ids))
            )
        return out

    def stream(
        self,
        tokens: bytes | list[bytes],
        prompt: str,
        max_new_tokens: int,
        temperature: float = 0.0,
        ngram: tuple[int, int] | None = None,
    ) -> Iterator[int | Decoded]:
        """One page, streamed: yields token ids as the model chooses them, then the ``Decoded``."""
        views = view_blobs(tokens) if isinstance(tokens, bytes) else None
        if views is not None:  # a reflowed page: its views one after another, then the joined result
            finals: list[Decoded] = []
            for v in views:
                for item in self.stream(v, prompt, max_new_tokens, temperature, ngram):
                    if isinstance(item, Decoded):
                        finals.append(item)
                    else:
                        yield item
            ids = [t for d in finals for t in d.token_ids]
            yield Decoded(join_views([d.text for d in finals]), ids, all(d.stopped for d in finals), len(ids))
            return
        page = _Page(0, [tokens] if isinstance(tokens, bytes) else list(tokens))
        q: queue.Queue = queue.Queue()
        client = self._client()
        try:
            client.start_stream(callback=lambda result, error: q.put((result, error)))
            client.async_stream_infer(
                self.cfg.triton_model,
                self._inputs(page, prompt, max_new_tokens, temperature, ngram, True),
                request_id=uuid.uuid4().hex,
                enable_empty_final_response=True,
            )
            deadline = time.monotonic() + self.cfg.triton_timeout_s
            while page.final is None:
                result, error = self._get(q, deadline)
                if error is not None:
                    raise BackendUnavailable(f"Triton decoder stream failed: {error}")
                done = self._absorb(page, result)
                if not done:
                    yield page.tokens[-1]
            yield page.final
        finally:
            self._close(client)

    # ---- internals ----------------------------------------------------------------------------
    def _client(self):  # noqa: ANN202
        import tritonclient.grpc as grpcclient

        try:
            return grpcclient.InferenceServerClient(self.url)
        except Exception as exc:  # tritonclient raises its own and grpc errors on bad URLs
            raise BackendUnavailable(f"cannot connect to Triton at {self.url}: {exc}") from exc

    @staticmethod
    def _close(client) -> None:  # noqa: ANN001
        try:
            client.stop_stream()
            client.close()
        except Exception:  # closing a broken channel must not mask the real error
            log.debug("closing the Triton client failed", exc_info=True)

    def _inputs(self, page: _Page, prompt: str, max_new: int, temperature: float, ngram, stream: bool):  # noqa: ANN001, ANN202
        import tritonclient.grpc as grpcclient

        def inp(name: str, arr: np.ndarray, dtype: str):  # noqa: ANN202
            t = grpcclient.InferInput(name, list(arr.shape), dtype)
            t.set_data_from_numpy(arr)
            return t

        n, w = ngram if ngram is not None else (0, 0)
        return [
            inp("VISION_TOKENS", np.array(page.blobs, dtype=np.object_), "BYTES"),
            inp("PROMPT", np.array([prompt.encode()], dtype=np.object_), "BYTES"),
            inp("MAX_NEW_TOKENS", np.array([max_new], dtype=np.int32), "INT32"),
            inp("TEMPERATURE", np.array([temperature], dtype=np.float32), "FP32"),
            inp("NGRAM", np.array([n, w], dtype=np.int32), "INT32"),
            inp("STREAM", np.array([stream], dtype=np.bool_), "BOOL"),
        ]

    def _get(self, q: queue.Queue, deadline: float):  # noqa: ANN202
        left = deadline - time.monotonic()
        if left <= 0:
            raise BackendUnavailable(
                f"Triton decoder at {self.url}: no result within {self.cfg.triton_timeout_s:.0f}s"
            )
        try:
            return q.get(timeout=left)
        except queue.Empty as exc:
            raise BackendUnavailable(
                f"Triton decoder at {self.url}: no result within {self.cfg.triton_timeout_s:.0f}s"
            ) from exc

    @staticmethod
    def _absorb(page: _Page, result) -> bool:  # noqa: ANN001
        """Fold one response into the page; True when it was the final one."""
        resp = result.get_response()
        final = (
            resp.parameters["triton_final_response"].bool_param
            if "triton_final_response" in resp.parameters
            else False
        )
        ids = result.as_numpy("TOKEN_IDS")
        text = result.as_numpy("TEXT")
        if text is not None:
            ids_list = [] if ids is None else [int(t) for t in ids.reshape(-1)]
            raw = text.reshape(-1)[0]
            page.final = Decoded(
                raw.decode() if isinstance(raw, bytes) else str(raw),
                ids_list,
                bool(result.as_numpy("STOPPED").reshape(-1)[0]),
                int(result.as_numpy("N_TOKENS").reshape(-1)[0]),
            )
            return True
        if ids is not None:
            page.tokens.extend(int(t) for t in ids.reshape(-1))
        if final and page.final is None:
            page.error = "final response without a result"
            return True
        return False

    def _run(
        self, pages: list[_Page], prompt: str, max_new: int, temperature: float, ngram, stream: bool
    ) -> None:  # noqa: ANN001
        from tritonclient.utils import InferenceServerException

        q: queue.Queue = queue.Queue()
        client = self._client()
        by_id: dict[str, _Page] = {}
        try:
            client.start_stream(callback=lambda result, error: q.put((result, error)))
            deadline = time.monotonic() + self.cfg.triton_timeout_s
            waiting = list(pages)
            outstanding = 0
            while waiting or outstanding:
                while waiting and outstanding < self.cfg.triton_max_in_flight:
                    p = waiting.pop(0)
                    p.error, p.tokens = "", []
                    rid = f"{uuid.uuid4().hex}-{p.index}"
                    by_id[rid] = p
                    client.async_stream_infer(
                        self.cfg.triton_model,
                        self._inputs(p, prompt, max_new, temperature, ngram, stream),
                        request_id=rid,
                        enable_empty_final_response=True,
                    )
                    outstanding += 1
                result, error = self._get(q, deadline)
                if error is not None:
                    # Stream errors carry no request id: the page stays without a final result
                    # and is resent by the caller.
                    outstanding -= 1
                    for p in pages:
                        if p.final is None and not p.error:
                            p.error = str(error)
                            break
                    continue
                page = by_id.get(result.get_response().id)
                if page is not None and self._absorb(page, result):
                    outstanding -= 1
        except InferenceServerException as exc:
            for p in pages:
                if p.final is None:
                    p.error = f"Triton at {self.url}: {exc}"
        finally:
            self._close(client)
