"""``ocrstream serve``: the embedded pipeline and the ingest HTTP API in one process.

The app is the ingest service's own (``create_app``: /v1/documents, /v1/jobs, the OpenAI-compatible
/v1/chat/completions and /v1/models, the web console at /), over the embedded pipeline's ingestor;
the pipeline runs its stages in threads (``runner="threads"``) on the in-memory bus (one shared
model, its calls serialised by the in-process backends' locks), so pages move while requests wait
on them.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any

import uvicorn

from ocrstream.pipeline.runner import Pipeline

log = logging.getLogger(__name__)


def embedded_app(pipe: Pipeline, api_keys: tuple[str, ...] = (), checkpoint_dir: str = "") -> Any:
    from ocrstream.services.ingest.api import create_app
    from ocrstream.services.ingest.console import ConsoleOptions
    from ocrstream.services.ingest.openai_api import (
        OpenAIOptions,
        TokenizerPromptTokens,
        checkpoint_model_names,
    )

    opts = OpenAIOptions(
        model_names=checkpoint_model_names(checkpoint_dir, embedded=True),
        prompt_tokens=TokenizerPromptTokens(tokenizer=getattr(pipe.model, "tokenizer", None)),
    )
    console = ConsoleOptions(encode_calls=lambda: pipe.encoder.encode_calls)
    # No keys = open, which EmbeddedServer allows on a loopback address only.
    return create_app(
        pipe.ingestor, pipe.telemetry["ingest"], api_keys, openai=opts, console=console, dev_open=not api_keys
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class EmbeddedServer:
    """Stage threads + uvicorn on one bound socket; ``start()``, ``url``, ``stop()``. ``pipe`` runs
    its stages in threads (``Pipeline.embedded(..., runner="threads")``)."""

    def __init__(
        self,
        pipe: Pipeline,
        host: str = "127.0.0.1",
        port: int = 8080,
        api_keys: tuple[str, ...] = (),
        checkpoint_dir: str = "",
    ) -> None:
        if not api_keys and not _loopback(host):
            raise ValueError(f"serving on {host} (not a loopback address) needs API keys (--api-key)")
        if pipe.runner != "threads":
            raise ValueError(
                'the embedded server needs a pipeline that runs its stages in threads (runner="threads")'
            )
        self.pipe = pipe
        # Bound here, before any thread starts: port 0 picks a free port with no race, and a port in
        # use fails the command at once with the OS error.
        self.sock = socket.create_server((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        app = embedded_app(pipe, api_keys, checkpoint_dir)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmbeddedServer:
        self.pipe.start()
        # uvicorn only installs signal handlers in the main thread; the caller owns SIGTERM.
        api = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="api", daemon=True
        )
        api.start()
        self._threads.append(api)
        return self

    def wait_started(self, timeout_s: float = 30.0) -> None:
        stop = threading.Event()
        for _ in range(int(timeout_s / 0.05)):
            if self.server.started:
                return
            stop.wait(0.05)
        raise RuntimeError(f"the HTTP server on {self.url} did not start within {timeout_s}s")

    def stop(self) -> None:
        """Stop accepting requests, let each stage finish its batch and commit, flush traces."""
        self.server.should_exit = True
        self.pipe.stop()
        for t in self._threads:
            t.join(timeout=60)
        self.sock.close()
        self.pipe.close()
