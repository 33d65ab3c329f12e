"""``ocrstream serve``: with no service named, the embedded pipeline and the HTTP API in one process
(the web console at /, the OpenAI-compatible /v1/chat/completions, the ingest API); with a service
name, that one pipeline service until SIGTERM, as deployed (config from OCRSTREAM_* env)."""

from __future__ import annotations

import argparse
import logging
import threading
from pathlib import Path

from ocrstream.cli.pipeline_cmds import SERVICES, _friendly, cmd_serve

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser(
        "serve",
        help="the embedded pipeline + HTTP API, web console and OpenAI-compatible API in one process;"
        " or, with SERVICE, one pipeline service until SIGTERM",
    )
    sv.add_argument("service", nargs="?", choices=SERVICES, help="run this pipeline service instead")
    sv.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    sv.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    sv.add_argument("--checkpoint", default="", help="model folder; default: the shipped embedded model")
    sv.add_argument("--store", default="", help="working store folder; default: OCRSTREAM_STORE_DIR")
    sv.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="accept this API key (X-API-Key or Authorization: Bearer); repeatable; default: OCRSTREAM_INGEST_API_KEYS",
    )
    sv.set_defaults(func=_friendly(cmd_serve_any))


def cmd_serve_any(args: argparse.Namespace) -> int:
    if args.service:
        return cmd_serve(args)
    return cmd_serve_embedded(args)


def cmd_serve_embedded(args: argparse.Namespace) -> int:
    from ocrstream.backends.inprocess import load_model
    from ocrstream.config import CommonConfig, IngestConfig
    from ocrstream.pipeline.runner import Pipeline
    from ocrstream.pipeline.server import EmbeddedServer
    from ocrstream.services.runtime import install_signal_handlers

    common, ing = CommonConfig.from_env(), IngestConfig.from_env()
    store = Path(args.store or common.store_dir)
    checkpoint = args.checkpoint or common.checkpoint_dir
    model = load_model(checkpoint)
    pipe = Pipeline.embedded(store, model, runner="threads")
    try:
        server = EmbeddedServer(
            pipe, args.host, args.port, tuple(args.api_key) or ing.api_keys, checkpoint_dir=checkpoint
        )
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    stop = threading.Event()
    install_signal_handlers(stop.set)
    server.start()
    server.wait_started()
    print(
        f"ocrstream: serving on {server.url} (web console at /, OpenAI-compatible API at {server.url}/v1,"
        f" store {store}); Ctrl-C stops",
        flush=True,
    )
    stop.wait()
    server.stop()
    return 0
