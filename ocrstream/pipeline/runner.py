"""One pipeline runner: the services' own handlers and worker loops over any bus, store and cache,
sharing one loaded model, driven one of two ways:

* ``runner="pump"``: the caller's thread runs the stages round-robin until the jobs are done
  (``ocrstream pipeline run``, ``ocrstream ocr``, most tests): no threads, a stall is an error.
* ``runner="threads"``: each stage's worker loop in its own thread (``ocrstream serve``, the Kafka
  tests, bench/pipeline.py): records really cross the bus and the trace context travels in headers.

``Pipeline.embedded(store_dir, model)`` is the laptop set-up (in-memory bus, local folder store,
in-process LRU cache, one telemetry for all stages); the deployed services run the same handlers,
one per process (``ocrstream.services.serve``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from ocrstream import layout
from ocrstream.backends.inprocess import InProcessEncoder
from ocrstream.bus.base import Bus
from ocrstream.bus.memory import MemoryBus
from ocrstream.cache.base import Cache
from ocrstream.cache.memory import MemoryCache
from ocrstream.config import CommonConfig, DecoderConfig, IngestConfig, WorkerConfig
from ocrstream.messages import DeadLetter, topic
from ocrstream.services.ingest.handler import Ingestor, Submission
from ocrstream.services.runtime import Worker, publish_messages
from ocrstream.services.wiring import Backbone, all_topics, build_handler
from ocrstream.store.base import Store, get_json
from ocrstream.store.local import LocalStore
from ocrstream.telemetry import Telemetry, tracer_provider

STAGES = ("rasterizer", "encoder", "decoder", "assembler")
RUNNERS = ("pump", "threads")
# Worker settings each way of running imposes (the rest, e.g. max_batch, from OCRSTREAM_<SERVICE>_*):
# one pumping thread must never wait for a batch to fill; threads wait briefly to batch.
_RUNNER_WORKER = {
    "pump": {"max_wait_ms": 0, "backoff_s": 0.05},
    "threads": {"max_wait_ms": 20, "backoff_s": 0.2},
}

Progress = Callable[[int, int], None]  # (pages done, pages known)


class PipelineStalled(RuntimeError):
    """Every service is idle but some jobs never reached a terminal state."""


class Pipeline:
    def __init__(
        self,
        model: Any,
        bus: Bus,
        store: Store,
        cache: Cache,
        *,
        common: CommonConfig | None = None,
        runner: str = "pump",
        stages: tuple[str, ...] = STAGES,
        env: Mapping[str, str] | None = None,
        decoder_cfg: DecoderConfig | None = None,
        worker_cfg: WorkerConfig | None = None,
        exporter: SpanExporter | None = None,
        telemetry: Telemetry | None = None,
        partitions: int = 2,
    ) -> None:
        """``telemetry``: one for every stage (the embedded process), else one per stage with its
        own tracer provider (as separate services have). ``worker_cfg`` replaces every stage's."""
        if runner not in RUNNERS:
            raise ValueError(f"runner {runner!r}: expected one of {', '.join(RUNNERS)}")
        self.common = common or CommonConfig.from_env(env)
        self.model, self.bus, self.store, self.cache, self.runner = model, bus, store, cache, runner
        self.prefix = self.common.topic_prefix
        bus.ensure_topics(all_topics(self.prefix), partitions)

        def tel(name: str) -> Telemetry:
            return telemetry or Telemetry(name, tracer_provider(name, self.common.otlp_endpoint, exporter))

        self.telemetry: dict[str, Telemetry] = {}
        self.encoder = InProcessEncoder(model)  # shared: one call count for the encoder and the mode rung
        self._make: dict[str, Callable[[], Worker]] = {}
        self.workers: dict[str, Worker] = {}
        for s in stages:
            self.telemetry[s] = tel(s)
            bb = Backbone(self.common, bus, store, cache, self.telemetry[s])
            cfg = worker_cfg or dataclasses.replace(
                WorkerConfig.for_service(s, env), metrics_port=0, **_RUNNER_WORKER[runner]
            )

            def make(s: str = s, bb: Backbone = bb, cfg: WorkerConfig = cfg) -> Worker:
                handler = build_handler(s, bb, model, env, decoder_cfg, encoder=self.encoder)
                return Worker(handler, bus, bb.telemetry, cfg, self.prefix)

            self._make[s] = make
            self.workers[s] = make()
        self.telemetry["ingest"] = tel("ingest")
        self.producer = bus.producer()
        ing = IngestConfig.from_env(env)
        self.ingestor = Ingestor(
            store,
            lambda msgs, span: publish_messages(self.producer, self.prefix, msgs, span),
            self.telemetry["ingest"],
            max_bytes=ing.max_bytes,
            default_mode=ing.default_mode,
            default_prompt=ing.default_prompt,
            flush=self.producer.flush,
        )
        self._threads: list[threading.Thread] = []

    @classmethod
    def embedded(
        cls,
        store_dir: str | Path,
        model: Any,
        *,
        env: Mapping[str, str] | None = None,
        bus: Bus | None = None,
        exporter: SpanExporter | None = None,
        runner: str = "pump",
        **kw: Any,
    ) -> Pipeline:
        """In-memory bus (unless ``bus``), a local folder store at ``store_dir``, the in-process
        cache and one telemetry for every stage; ``kw`` as for the constructor."""
        common = CommonConfig.from_env(env, store="local", store_dir=str(store_dir), cache="memory")
        tel = Telemetry("embedded", tracer_provider("embedded", common.otlp_endpoint, exporter))
        return cls(
            model,
            bus or MemoryBus(),
            LocalStore(store_dir),
            MemoryCache(),
            common=common,
            runner=runner,
            env=env,
            telemetry=tel,
            **kw,
        )

    # ---- running ----------------------------------------------------------------------------
    def start(self) -> Pipeline:
        """Start each stage's worker loop in a thread (runner "threads")."""
        if self.runner != "threads":
            raise RuntimeError('start() runs the stages in threads: build the pipeline with runner="threads"')
        for name, w in self.workers.items():
            t = threading.Thread(target=w.run, name=f"ocrstream-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """SIGTERM semantics: stop polling, finish and commit the batch in hand, close."""
        for w in self.workers.values():
            w.stop()
        for t in self._threads:
            t.join(timeout=120)
        self._threads.clear()
        self.producer.close()

    def close(self) -> None:
        """Flush exported spans (OTLP) and stop the exporters."""
        for tel in {id(t): t for t in self.telemetry.values()}.values():
            tel.shutdown()

    def restart(self, service: str) -> None:
        """Drop a worker without committing and start a fresh one in the same group (crash test)."""
        self.workers[service] = self._make[service]()

    def submit_paths(self, paths: Iterable[str | Path], mode: str = "", prompt: str = "") -> list[Submission]:
        return [self.ingestor.submit(Path(p).read_bytes(), Path(p).name, mode, prompt) for p in paths]

    def wait(
        self, job_ids: list[str], timeout_s: float = 600.0, progress: Progress | None = None
    ) -> dict[str, str]:
        """Until every job is terminal: pumped here, or polled while the threads work (then a
        TimeoutError with the states after ``timeout_s``). Returns each job's status."""
        if self.runner == "pump":
            self.pump(job_ids, progress)
            return self._states(job_ids)
        deadline = time.monotonic() + timeout_s
        while True:
            states = self._states(job_ids)
            if progress is not None:
                progress(*self.page_progress(job_ids))
            if all(s in layout.TERMINAL for s in states.values()):
                return states
            if time.monotonic() >= deadline:
                raise TimeoutError(f"jobs not finished in {timeout_s}s: {states}")
            time.sleep(0.1)

    def pump(self, job_ids: list[str], progress: Progress | None = None, max_idle: int = 3) -> None:
        """Run the stages round-robin in this thread until every job is terminal."""
        idle = 0
        while True:
            moved = sum(w.run_once(0.0) for w in self.workers.values())
            if progress is not None:
                progress(*self.page_progress(job_ids))
            states = self._states(job_ids)
            if all(s in layout.TERMINAL for s in states.values()):
                return
            idle = 0 if moved else idle + 1
            if idle >= max_idle:
                raise PipelineStalled(f"all services idle, jobs not finished: {states}")

    def _states(self, job_ids: list[str]) -> dict[str, str]:
        return {j: self.ingestor.jobs.get(j)["status"] for j in job_ids}

    def page_progress(self, job_ids: list[str]) -> tuple[int, int]:
        """(pages assembled, pages rasterized) of ``job_ids`` so far."""
        done = total = 0
        for j in job_ids:
            rec = self.ingestor.jobs.get(j)
            total += int(rec.get("n_pages", 0))
            done += self.ingestor.jobs.pages_done(j) if rec["status"] != "failed" else 0
        return done, total

    def dead_letters(self) -> list[DeadLetter]:
        """The dead-letter topic so far (the in-memory bus keeps every record)."""
        records = getattr(self.bus, "records", None)
        if records is None:
            raise TypeError(f"{type(self.bus).__name__} does not keep its records: read the topic instead")
        return [DeadLetter.from_bytes(r.value, r.headers) for r in records(topic(DeadLetter, self.prefix))]

    def run(
        self,
        paths: Iterable[str | Path],
        out_dir: str | Path,
        mode: str = "",
        prompt: str = "",
        progress: Progress | None = None,
    ) -> list[dict[str, Any]]:
        """OCR ``paths`` and write ``<name>.md`` + ``<name>.json`` per document into ``out_dir``;
        ``progress(pages done, pages known)`` is called as pages move (the CLI's bar)."""
        subs = self.submit_paths(paths, mode, prompt)
        self.wait([s.job_id for s in subs], progress=progress)
        return [self.export(s.job_id, out_dir) for s in subs]

    def redecode(self, job_id: str, prompt: str, mode: str = "") -> Submission:
        """A new prompt for an encoded job or document; waits for it (zero encoder calls)."""
        sub = self.ingestor.redecode(job_id, prompt, mode)
        self.wait([sub.job_id])
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
