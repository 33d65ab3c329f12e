"""Every consumer stage as a Worker thread in one process, over any bus/store/cache.

Used by the Kafka acceptance tests and bench/pipeline.py: the same handlers and worker loops as
the deployed services (records really cross the bus, trace context really travels in headers;
each stage gets its own tracer provider), without spawning processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from ocrstream.backends.inprocess import InProcessEncoder
from ocrstream.bus.base import Bus
from ocrstream.cache.base import Cache
from ocrstream.config import CommonConfig, DecoderConfig, IngestConfig, WorkerConfig
from ocrstream.services import layout
from ocrstream.services.ingest.handler import Ingestor
from ocrstream.services.runtime import Worker, publish_messages
from ocrstream.services.wiring import Backbone, all_topics, build_handler
from ocrstream.store.base import Store
from ocrstream.telemetry import Telemetry, tracer_provider

STAGES = ("rasterizer", "encoder", "decoder", "assembler")


class ThreadedPipeline:
    def __init__(
        self,
        common: CommonConfig,
        bus: Bus,
        store: Store,
        cache: Cache,
        model: Any,
        *,
        stages: tuple[str, ...] = STAGES,
        env: Mapping[str, str] | None = None,
        decoder_cfg: DecoderConfig | None = None,
        worker_cfg: WorkerConfig | None = None,
        exporter: SpanExporter | None = None,
        partitions: int = 2,
    ) -> None:
        self.common, self.bus, self.store, self.cache = common, bus, store, cache
        bus.ensure_topics(all_topics(common.topic_prefix), partitions)
        self.encoder = InProcessEncoder(model)
        self.workers: dict[str, Worker] = {}
        self.telemetry: dict[str, Telemetry] = {}
        self._threads: list[threading.Thread] = []
        for s in stages:
            tel = Telemetry(s, tracer_provider(s, common.otlp_endpoint, exporter))
            bb = Backbone(common, bus, store, cache, tel)
            handler = build_handler(s, bb, model, env, decoder_cfg, encoder=self.encoder)
            cfg = worker_cfg or WorkerConfig(max_batch=4, max_wait_ms=20, backoff_s=0.2, metrics_port=0)
            self.workers[s] = Worker(handler, bus, tel, cfg, common.topic_prefix)
            self.telemetry[s] = tel
        self.producer = bus.producer()
        ing = IngestConfig.from_env(env)
        tel = Telemetry("ingest", tracer_provider("ingest", common.otlp_endpoint, exporter))
        self.telemetry["ingest"] = tel
        prefix = common.topic_prefix
        self.ingestor = Ingestor(
            store,
            lambda msgs, span: publish_messages(self.producer, prefix, msgs, span),
            tel,
            max_bytes=ing.max_bytes,
            default_mode=ing.default_mode,
            default_prompt=ing.default_prompt,
            flush=self.producer.flush,
        )

    def start(self) -> ThreadedPipeline:
        for name, w in self.workers.items():
            t = threading.Thread(target=w.run, name=f"ocrstream-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait(self, job_ids: list[str], timeout_s: float = 600.0, poll_s: float = 0.1) -> dict[str, str]:
        """Block until every job is terminal; TimeoutError (with the states) otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = {j: self.ingestor.jobs.get(j)["status"] for j in job_ids}
            if all(s in layout.TERMINAL for s in states.values()):
                return states
            if time.monotonic() >= deadline:
                raise TimeoutError(f"jobs not finished in {timeout_s}s: {states}")
            time.sleep(poll_s)

    def stop(self) -> None:
        """SIGTERM semantics: stop polling, finish and commit the batch in hand, close."""
        for w in self.workers.values():
            w.stop()
        for t in self._threads:
            t.join(timeout=120)
        self.producer.close()
