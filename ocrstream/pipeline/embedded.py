"""The embedded one-process mode: the same five services wired with the in-memory bus, a local
folder store and the in-process LRU cache, sharing one loaded model, pumped in one thread.

``EmbeddedPipeline(...).run(paths, out_dir)`` is what ``ocrstream pipeline run`` (the README's
main command) calls.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from ocrstream.bus.memory import MemoryBus
from ocrstream.cache.memory import MemoryCache
from ocrstream.config import CommonConfig, DecoderConfig, IngestConfig, WorkerConfig
from ocrstream.messages import DeadLetter, PageDecoded, PageRasterized, topic
from ocrstream.services import layout
from ocrstream.services.ingest.handler import Ingestor, Submission
from ocrstream.services.runtime import Worker, publish_messages
from ocrstream.services.wiring import Backbone, build_handler
from ocrstream.store.base import get_json
from ocrstream.store.local import LocalStore
from ocrstream.telemetry import Telemetry, tracer_provider

log = logging.getLogger(__name__)

STAGES = ("rasterizer", "encoder", "decoder", "assembler")


class PipelineStalled(RuntimeError):
    """Every service is idle but some jobs never reached a terminal state."""


class EmbeddedPipeline:
    def __init__(
        self,
        store_dir: str | Path,
        model: Any,
        *,
        env: Mapping[str, str] | None = None,
        decoder_cfg: DecoderConfig | None = None,
        exporter: SpanExporter | None = None,
        bus: MemoryBus | None = None,
    ) -> None:
        common = CommonConfig.from_env(env, store="local", store_dir=str(store_dir), cache="memory")
        self.bus = bus or MemoryBus()
        self.store = LocalStore(store_dir)
        self.cache = MemoryCache()
        telemetry = Telemetry("embedded", tracer_provider("embedded", common.otlp_endpoint, exporter))
        self.bb = Backbone(common, self.bus, self.store, self.cache, telemetry)
        self.telemetry = telemetry
        self.prefix = common.topic_prefix
        self.model = model
        from ocrstream.backends.inprocess import InProcessEncoder

        self.encoder = InProcessEncoder(model)
        self.workers: dict[str, Worker] = {}
        for s in STAGES:
            self.workers[s] = self._worker(s, env, decoder_cfg)
        ing = IngestConfig.from_env(env)
        producer = self.bus.producer()
        self.ingestor = Ingestor(
            self.store,
            lambda msgs, span: publish_messages(producer, self.prefix, msgs, span),
            telemetry,
            max_bytes=ing.max_bytes,
            default_mode=ing.default_mode,
            default_prompt=ing.default_prompt,
        )

    def _worker(
        self, service: str, env: Mapping[str, str] | None, decoder_cfg: DecoderConfig | None
    ) -> Worker:
        handler = build_handler(service, self.bb, self.model, env, decoder_cfg, encoder=self.encoder)
        # One thread pumps every stage: never block waiting for a batch to fill.
        cfg = dataclasses.replace(
            WorkerConfig.for_service(service, env), max_wait_ms=0, metrics_port=0, backoff_s=0.05
        )
        return Worker(handler, self.bus, self.telemetry, cfg, self.prefix)

    def close(self) -> None:
        """Flush exported spans (OTLP) and stop the exporters."""
        self.telemetry.shutdown()

    def restart(self, service: str, env: Mapping[str, str] | None = None) -> None:
        """Drop a worker without committing and start a fresh one in the same group (crash test)."""
        self.workers[service] = self._worker(service, env, None)

    # ---- running ----------------------------------------------------------------------------
    def submit_paths(self, paths: Iterable[str | Path], mode: str = "", prompt: str = "") -> list[Submission]:
        return [self.ingestor.submit(Path(p).read_bytes(), Path(p).name, mode, prompt) for p in paths]

    def pump(
        self, job_ids: list[str], progress: Callable[[int, int], None] | None = None, max_idle: int = 3
    ) -> None:
        """Run the stages round-robin until every job is terminal."""
        idle = 0
        while True:
            moved = sum(w.run_once(0.0) for w in self.workers.values())
            if progress is not None:
                progress(*self.page_progress())
            if all(self.ingestor.jobs.get(j)["status"] in layout.TERMINAL for j in job_ids):
                return
            idle = 0 if moved else idle + 1
            if idle >= max_idle:
                states = {j: self.ingestor.jobs.get(j)["status"] for j in job_ids}
                raise PipelineStalled(f"all services idle, jobs not finished: {states}")

    def page_progress(self) -> tuple[int, int]:
        """(pages decoded, pages rasterized) so far on this bus."""
        done = len(self.bus.records(topic(PageDecoded, self.prefix)))
        total = len(self.bus.records(topic(PageRasterized, self.prefix)))
        return done, total

    def dead_letters(self) -> list[DeadLetter]:
        return [
            DeadLetter.from_bytes(r.value, r.headers)
            for r in self.bus.records(topic(DeadLetter, self.prefix))
        ]

    def run(
        self,
        paths: Iterable[str | Path],
        out_dir: str | Path,
        mode: str = "",
        prompt: str = "",
        progress: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """OCR ``paths`` and write ``<name>.md`` + ``<name>.json`` per document into ``out_dir``;
        ``progress(pages decoded, pages known)`` is called as pages move (the CLI's bar)."""
        subs = self.submit_paths(paths, mode, prompt)
        self.pump([s.job_id for s in subs], progress)
        return [self.export(s.job_id, out_dir) for s in subs]

    def redecode(self, job_id: str, prompt: str, mode: str = "") -> Submission:
        sub = self.ingestor.redecode(job_id, prompt, mode)
        self.pump([sub.job_id])
        return sub

    def export(self, job_id: str, out_dir: str | Path) -> dict[str, Any]:
        """Copy a job's result to ``out_dir``; returns its summary (status, paths)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        status = self.ingestor.jobs.get(job_id)
        name = Path(status.get("filename") or job_id).stem
        summary = {"job_id": job_id, "file": status.get("filename", ""), "status": status["status"]}
        if status["status"] == "failed":
            summary["reason"] = status.get("reason", "")
            return summary
        md, js = out / f"{name}.md", out / f"{name}.json"
        md.write_bytes(self.store.get(layout.markdown_key(job_id)))
        result = get_json(self.store, layout.result_key(job_id))
        js.write_text(json.dumps(result, ensure_ascii=False, indent=1))
        summary.update(
            markdown=str(md), json=str(js), n_pages=result["n_pages"], failed_pages=result["failed_pages"]
        )
        measured = [
            p["text_layer_agreement"] for p in result["pages"] if p.get("text_layer_agreement", -1) >= 0
        ]
        if measured:
            summary["text_layer_agreement"] = sum(measured) / len(measured)
        return summary
