"""``ocrstream serve ingest``: the HTTP API, the reference-topic consumer and the bucket/folder
scanners in one process; SIGTERM stops all three, drains and exits 0.

Fails at start without API keys (unless OCRSTREAM_INGEST_DEV_OPEN) or, with S3, without
credentials. The API starts at once; /readyz answers 503 naming the missing topics until the
pipeline's topics exist (ingest checks, never creates them), and only then do the consumer and
the scanners start."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping

import uvicorn

from ocrstream.config import CommonConfig, IngestConfig, TopicsConfig
from ocrstream.errors import OcrStreamError
from ocrstream.services.ingest.api import create_app
from ocrstream.services.ingest.auth import ApiKeys
from ocrstream.services.ingest.handler import Ingestor, RefHandler
from ocrstream.services.ingest.sources import BucketSource, FolderSource, make_fetcher
from ocrstream.services.runtime import install_signal_handlers, publish_messages
from ocrstream.services.wiring import TopicGate, all_topics, build_backbone, build_worker
from ocrstream.telemetry import setup_logging

log = logging.getLogger(__name__)


def main(env: Mapping[str, str] | None = None) -> int:
    common = CommonConfig.from_env(env)
    cfg = IngestConfig.from_env(env)
    setup_logging(common.log_format)
    ApiKeys(cfg.api_keys, cfg.dev_open)  # no keys and no dev flag: fail before connecting anywhere
    if cfg.dev_open and not cfg.api_keys:
        log.warning("ingest API open without API keys (OCRSTREAM_INGEST_DEV_OPEN): local development only")
    bb = build_backbone("ingest", common)
    gate = TopicGate(bb.bus, all_topics(common.topic_prefix))
    producer = bb.bus.producer()
    ingestor = Ingestor(
        bb.store,
        lambda msgs, span: publish_messages(producer, common.topic_prefix, msgs, span),
        bb.telemetry,
        max_bytes=cfg.max_bytes,
        default_mode=cfg.default_mode,
        default_prompt=cfg.default_prompt,
        flush=producer.flush,
    )
    stop = threading.Event()
    threads: list[threading.Thread] = []
    client = getattr(bb.store, "client", None)
    worker = None
    fetch = make_fetcher(client, cfg.ref_roots, cfg.ref_buckets, cfg.max_bytes)
    sources = []
    if cfg.s3_source_bucket and client is not None:
        sources.append(BucketSource(client, cfg.s3_source_bucket, cfg.s3_source_prefix, ingestor, bb.store))
    if cfg.watch_dir:
        sources.append(FolderSource(cfg.watch_dir, ingestor, bb.store))
    if sources:
        threads.append(
            threading.Thread(target=_scan_loop, args=(sources, cfg.poll_s, stop), name="scan", daemon=True)
        )

    context = None
    if cfg.context_api:
        from ocrstream.compression.http import ContextRegistry
        from ocrstream.config import DecoderConfig
        from ocrstream.guard import DecodeSettings

        # The store and cache are the pipeline's (MinIO, Redis); the model and its curve load on
        # the first context request, so an image without torch still serves everything else.
        # Read-back decodes as the pipeline's decoder does (OCRSTREAM_DECODER_* settings).
        context = ContextRegistry(
            lambda: _load_model(common),
            bb.store,
            bb.cache,
            cfg.context_budget,
            load_curve=lambda: _load_curve(common),
            decode=DecodeSettings.from_config(DecoderConfig.from_env(env)),
        )
    app = create_app(
        ingestor,
        bb.telemetry,
        cfg.api_keys,
        ready=lambda: gate.ok,
        context=context,
        openai=_openai(common, cfg, client),
        dev_open=cfg.dev_open,
        not_ready_detail=gate.detail,
    )
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning"))
    # uvicorn only captures signals in the main thread; it runs in a thread and we own SIGTERM.
    api = threading.Thread(target=server.run, name="api", daemon=True)

    def _stop() -> None:
        stop.set()
        server.should_exit = True
        if worker is not None:
            worker.stop()

    install_signal_handlers(_stop)
    api.start()
    if gate.wait(stop, TopicsConfig.from_env(env).check_interval_s):
        if cfg.refs_topic:
            worker = build_worker("ingest", bb, RefHandler(ingestor, fetch), env)
            threads.append(threading.Thread(target=worker.run, name="refs", daemon=True))
            if stop.is_set():
                worker.stop()
        for t in threads:
            t.start()
    stop.wait()
    api.join(timeout=30)
    for t in threads:
        t.join(timeout=60)
    producer.flush()
    producer.close()
    bb.telemetry.shutdown()
    return 0


def _openai(common: CommonConfig, cfg: IngestConfig, client):  # noqa: ANN001, ANN202 - Minio | None
    from ocrstream.services.ingest.openai_api import (
        OpenAIOptions,
        TokenizerPromptTokens,
        checkpoint_model_names,
    )
    from ocrstream.services.ingest.references import ReferencePolicy

    # Image URLs in chat requests may name the reference topic's buckets and the allowed URL prefixes.
    return OpenAIOptions(
        model_names=checkpoint_model_names(common.checkpoint_dir),
        prompt_tokens=TokenizerPromptTokens(common.checkpoint_dir),
        references=ReferencePolicy(buckets=cfg.ref_buckets, http_prefixes=cfg.ref_http_prefixes),
        s3_client=client,
    )


def _load_model(common: CommonConfig):  # noqa: ANN202 - OcrModel
    from ocrstream.backends.inprocess import load_model

    # one device/dtype rule for every role (auto | cuda | cpu; bf16 on a GPU, fp32 on the CPU)
    return load_model(common.checkpoint_dir, common.device, common.dtype)


def _load_curve(common: CommonConfig):  # noqa: ANN202 - CompressionCurve | None
    from ocrstream.compression.context_store import model_curve

    return model_curve(common.checkpoint_dir or None)


def _scan_loop(sources: list, poll_s: float, stop: threading.Event) -> None:
    while not stop.is_set():
        for src in sources:
            try:
                n = src.scan()
                if n:
                    log.info("%s: submitted %d new documents", type(src).__name__, n)
            except OcrStreamError as exc:
                log.warning("%s scan failed: %s", type(src).__name__, exc)
        stop.wait(poll_s)


if __name__ == "__main__":
    sys.exit(main())
