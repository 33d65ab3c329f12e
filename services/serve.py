"""Run one consumer service until signalled: config, build, serve health/metrics, drain, exit 0."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ocrstream.services.runtime import HealthServer, install_signal_handlers
from ocrstream.services.wiring import all_topics, build_backbone, build_handler, build_worker, load_model

from ocrstream.config import CommonConfig, DecoderConfig, WorkerConfig
from ocrstream.telemetry import setup_logging

log = logging.getLogger(__name__)


def serve(service: str, env: Mapping[str, str] | None = None) -> int:
    common = CommonConfig.from_env(env)
    setup_logging(common.log_format)
    bb = build_backbone(service, common)
    bb.bus.ensure_topics(all_topics(common.topic_prefix))
    # A Triton decoder needs no local model (its mode rung is then skipped: no encoder here).
    needs_model = service == "encoder" or (
        service == "decoder" and DecoderConfig.from_env(env).backend == "inprocess"
    )
    model = load_model(common) if needs_model else None
    worker = build_worker(service, bb, build_handler(service, bb, model, env), env)
    wcfg = WorkerConfig.for_service(service, env)
    health = None
    if wcfg.metrics_port:
        health = HealthServer(
            wcfg.metrics_host, wcfg.metrics_port, bb.telemetry, lambda: worker.consumer.ready
        ).start()
    install_signal_handlers(worker.stop)
    try:
        worker.run()  # returns after stop(): in-flight batch finished and committed
    finally:
        if health is not None:
            health.close()
        bb.telemetry.shutdown()
    log.info("%s stopped after %d records", service, worker.processed)
    return 0
