"""Run one consumer service until signalled: config, build, serve health/metrics, drain, exit 0.

The health server starts first; /readyz stays 503 (saying which topics are missing) until the
pipeline's topics exist, which the service checks but never creates (``ocrstream topics create``
or the chart's topics Job make them with the cluster's partitions and replication).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from ocrstream.config import CommonConfig, DecoderConfig, TopicsConfig, WorkerConfig
from ocrstream.services.runtime import HealthServer, Worker, install_signal_handlers
from ocrstream.services.wiring import (
    TopicGate,
    all_topics,
    build_backbone,
    build_handler,
    build_worker,
    load_model,
)
from ocrstream.telemetry import setup_logging

log = logging.getLogger(__name__)


def serve(service: str, env: Mapping[str, str] | None = None) -> int:
    common = CommonConfig.from_env(env)
    setup_logging(common.log_format)
    bb = build_backbone(service, common)
    wcfg = WorkerConfig.for_service(service, env)
    gate = TopicGate(bb.bus, all_topics(common.topic_prefix))
    stop = threading.Event()
    worker: Worker | None = None

    def ready() -> bool:
        return gate.ok and worker is not None and worker.consumer.ready

    def _stop() -> None:
        stop.set()
        if worker is not None:
            worker.stop()

    health = None
    if wcfg.metrics_port:
        health = HealthServer(wcfg.metrics_host, wcfg.metrics_port, bb.telemetry, ready, gate.detail).start()
    install_signal_handlers(_stop)
    try:
        if not gate.wait(stop, TopicsConfig.from_env(env).check_interval_s):
            log.info("%s stopped while waiting for its topics", service)
            return 0
        # A Triton decoder needs no local model (its mode rung is then skipped: no encoder here).
        needs_model = service == "encoder" or (
            service == "decoder" and DecoderConfig.from_env(env).backend == "inprocess"
        )
        model = load_model(common) if needs_model else None
        worker = build_worker(service, bb, build_handler(service, bb, model, env), env)
        if stop.is_set():  # signalled while the model loaded
            worker.stop()
        worker.run()  # returns after stop(): in-flight batch finished and committed
    finally:
        if health is not None:
            health.close()
        bb.telemetry.shutdown()
    log.info("%s stopped after %d records", service, worker.processed)
    return 0
