"""Pipeline throughput: pages/s through the Kafka pipeline vs the same model called in process,
and a cache-hit re-decode (new prompt, zero encoder calls) vs a full pass.

    .venv/bin/python bench/pipeline.py                    # Kafka + Redis + MinIO from OCRSTREAM_* env
    .venv/bin/python bench/pipeline.py --bus memory --store local --cache memory   # no services
    .venv/bin/python bench/pipeline.py --checkpoint DIR   # a model folder (default: shipped, else tiny random)

Both sides do the same work per page: rasterize (pypdfium2, 144 dpi), encode in micro-batches,
one greedy decode of ``--max-new-tokens`` (the pipeline's guard ladder is a single greedy rung
here, so no retries are counted on either side). The pipeline runs its four stages as worker
threads over the real bus (records, headers, commits, store and cache writes included).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import string
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_pdf(pages: list[str]) -> bytes:
    from reportlab.lib.pagesizes import A5
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A5)
    for text in pages:
        y = 560
        for line in text.split("\n"):
            c.drawString(40, y, line)
            y -= 16
        c.showPage()
    c.save()
    return buf.getvalue()


def random_page(rng: random.Random) -> str:
    def line() -> str:
        return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(8))

    return "\n".join(line() for _ in range(rng.randint(6, 14)))


def load_model(checkpoint: str, tiny: bool, random_size: str = "embedded"):
    import torch

    from ocrstream.model.runtime import SHIPPED_MODEL_DIR, OcrModel

    if checkpoint:
        return OcrModel.load(checkpoint), f"checkpoint {checkpoint}", checkpoint
    if not tiny and (SHIPPED_MODEL_DIR / "config.json").exists():
        return OcrModel.load(None), "shipped embedded model", ""
    from ocrstream.model.weights import save_snapshot
    from tests.tiny import tiny_ocr_model

    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    model = tiny_ocr_model(config=random_size)
    folder = tempfile.mkdtemp(prefix="ocrstream-bench-model-")  # for --processes: services load it
    save_snapshot(model.model, folder)
    model.tokenizer.tok.save(os.path.join(folder, "tokenizer.json"))
    return model, f"random-weight model ({random_size} config)", folder


def in_process(model, docs: list[bytes], mode: str, prompt: str, batch: int, max_new: int) -> float:
    from ocrstream.raster import Limits, rasterize

    t0 = time.perf_counter()
    images = []
    for data in docs:
        _, pages = rasterize(data, Limits())
        images.extend(p.image for p in pages)
    for i in range(0, len(images), batch):
        vts = model.encode_batch(images[i : i + batch], None if mode == "default" else mode)
        model.decode(vts, prompt=prompt, max_new_tokens=max_new, temperature=0.0, ngram=(20, 90))
    return time.perf_counter() - t0


class ProcessPipeline:
    """The four consumer stages as real service processes (``python -m ocrstream.services.<s>.main``),
    the deployed shape: no GIL shared between stages. The bench process only ingests and waits."""

    STAGES = ("rasterizer", "encoder", "decoder", "assembler")

    def __init__(self, args, common, model_dir: str, env_extra: dict[str, str]) -> None:
        import subprocess

        from ocrstream.bus.kafka import KafkaBus, create_topics
        from ocrstream.services.ingest.handler import Ingestor
        from ocrstream.services.runtime import publish_messages
        from ocrstream.services.wiring import all_topics, build_store
        from ocrstream.telemetry import Telemetry

        self.ports = {s: _free_port() for s in self.STAGES}
        env = {
            **os.environ,
            **env_extra,
            "OCRSTREAM_KAFKA_BOOTSTRAP": common.kafka_bootstrap,
            "OCRSTREAM_TOPIC_PREFIX": common.topic_prefix,
            "OCRSTREAM_REDIS_URL": common.redis_url,
            "OCRSTREAM_REDIS_KEY_PREFIX": common.redis_key_prefix,
            "OCRSTREAM_STORE": common.store,
            "OCRSTREAM_STORE_DIR": common.store_dir,
            "OCRSTREAM_CACHE": common.cache,
            "OCRSTREAM_CHECKPOINT_DIR": model_dir,
            "OCRSTREAM_DECODER_LADDER": "t=0.0",
            "OCRSTREAM_DECODER_MAX_NEW_TOKENS": str(args.max_new_tokens),
            "OCRSTREAM_LOG_FORMAT": "text",
        }
        for s in self.STAGES:
            key = s.upper()
            env |= {
                f"OCRSTREAM_{key}_MAX_BATCH": str(args.batch),
                f"OCRSTREAM_{key}_MAX_WAIT_MS": str(args.max_wait_ms),
                f"OCRSTREAM_{key}_METRICS_PORT": str(self.ports[s]),
                f"OCRSTREAM_{key}_METRICS_HOST": "127.0.0.1",
            }
        # As a deployment does it: the services only check for their topics.
        create_topics(
            common.kafka_bootstrap, dict.fromkeys(all_topics(common.topic_prefix), 2), replication=1
        )
        bus = KafkaBus(common.kafka_bootstrap, "ocrstream-bench")
        self.log = open(os.path.join(common.store_dir, "services.log"), "ab")  # noqa: SIM115
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", f"ocrstream.services.{s}.main"],
                env=env,
                stdout=self.log,
                stderr=self.log,
            )
            for s in self.STAGES
        ]
        self.producer = bus.producer()
        store = build_store(common)
        prefix = common.topic_prefix
        self.ingestor = Ingestor(
            store,
            lambda msgs, span: publish_messages(self.producer, prefix, msgs, span),
            Telemetry("bench"),
            default_mode=args.mode,
            default_prompt=args.prompt,
            flush=self.producer.flush,
        )

    def metric(self, service: str, line_prefix: str) -> float:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[service]}/metrics", timeout=10) as r:
            text = r.read().decode()
        return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line_prefix))

    def wait(self, job_ids, timeout_s=600.0):
        from ocrstream import layout

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self.ingestor.jobs.get(j)["status"] in layout.TERMINAL for j in job_ids):
                return
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a service exited; see {self.log.name}")
            time.sleep(0.05)
        raise TimeoutError(f"jobs not finished in {timeout_s}s")

    def stop(self) -> None:
        import signal

        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait(timeout=120)
        self.producer.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _common(args):
    from ocrstream.config import CommonConfig

    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    return CommonConfig.from_env(
        topic_prefix=prefix,
        redis_key_prefix=f"bench:{prefix}",
        store=args.store,
        store_dir=tempfile.mkdtemp(prefix="ocrstream-bench-"),
        cache=args.cache,
    )


def run_processes(args, model_dir: str, docs: list[bytes], rng) -> dict:
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    pipe = ProcessPipeline(args, _common(args), model_dir, env)
    try:
        warm = make_pdf([random_page(rng)])  # model loads, consumer-group joins: not counted
        pipe.wait([pipe.ingestor.submit(warm, "warm.pdf").job_id], timeout_s=600)
        calls0 = pipe.metric("encoder", "ocrstream_encoder_calls_total")
        t0 = time.perf_counter()
        subs = [pipe.ingestor.submit(d, f"doc{i}.pdf") for i, d in enumerate(docs)]
        pipe.wait([s.job_id for s in subs], timeout_s=3600)
        t_pipe = time.perf_counter() - t0
        calls1 = pipe.metric("encoder", "ocrstream_encoder_calls_total")
        t0 = time.perf_counter()
        re_subs = [pipe.ingestor.redecode(s.job_id, args.redecode_prompt) for s in subs]
        pipe.wait([s.job_id for s in re_subs], timeout_s=3600)
        t_re = time.perf_counter() - t0
        calls2 = pipe.metric("encoder", "ocrstream_encoder_calls_total")
        hits = pipe.metric("decoder", 'ocrstream_token_cache_total{result="hit"}')
        misses = pipe.metric("decoder", 'ocrstream_token_cache_total{result="miss"}')
        busy = {}
        for s in pipe.STAGES:
            total = pipe.metric(s, "ocrstream_stage_seconds_sum")
            n = pipe.metric(s, "ocrstream_stage_seconds_count")
            busy[s] = (total, int(n), -1)
    finally:
        pipe.stop()
    return {
        "t_pipe": t_pipe,
        "t_re": t_re,
        "encoded": int(calls1 - calls0),
        "re_calls": int(calls2 - calls1),
        "hit": hits / (hits + misses) if hits + misses else 0.0,
        "busy": busy,
        "label": "kafka pipeline (processes)",
    }


def build_pipeline(args, model):
    from ocrstream.bus.memory import MemoryBus
    from ocrstream.config import CommonConfig, DecoderConfig, EncoderConfig, WorkerConfig
    from ocrstream.pipeline.runner import Pipeline
    from ocrstream.services.wiring import build_cache, build_store

    prefix = f"bench.{uuid.uuid4().hex[:8]}."
    store_dir = tempfile.mkdtemp(prefix="ocrstream-bench-")
    common = CommonConfig.from_env(
        topic_prefix=prefix,
        redis_key_prefix=f"bench:{prefix}",
        store=args.store,
        store_dir=store_dir,
        cache=args.cache,
    )
    if args.bus == "kafka":
        from ocrstream.bus.kafka import KafkaBus, create_topics
        from ocrstream.services.wiring import all_topics

        bus = KafkaBus(common.kafka_bootstrap, "ocrstream-bench")
        create_topics(common.kafka_bootstrap, dict.fromkeys(all_topics(prefix), 2), replication=1)
    else:
        bus = MemoryBus()
    dec = DecoderConfig(max_new_tokens=args.max_new_tokens, ladder="t=0.0")
    wcfg = WorkerConfig(max_batch=args.batch, max_wait_ms=args.max_wait_ms, metrics_port=0)
    env = {"OCRSTREAM_INGEST_DEFAULT_MODE": args.mode, "OCRSTREAM_INGEST_DEFAULT_PROMPT": args.prompt}
    pipe = Pipeline(
        model,
        bus,
        build_store(common),
        build_cache(common, EncoderConfig()),
        common=common,
        runner="threads",
        env=env,
        decoder_cfg=dec,
        worker_cfg=wcfg,
        partitions=2,
    )
    return pipe.start()


def run_threads(args, model, docs: list[bytes], rng) -> dict:
    pipe = build_pipeline(args, model)
    try:
        warm = make_pdf([random_page(rng)])  # consumer-group joins and topic metadata, not counted
        pipe.wait([pipe.ingestor.submit(warm, "warm.pdf").job_id], timeout_s=300)
        calls0 = pipe.encoder.encode_calls
        t0 = time.perf_counter()
        subs = [pipe.ingestor.submit(d, f"doc{i}.pdf") for i, d in enumerate(docs)]
        pipe.wait([s.job_id for s in subs], timeout_s=3600)
        t_pipe = time.perf_counter() - t0
        encoded = pipe.encoder.encode_calls - calls0
        t0 = time.perf_counter()
        re_subs = [pipe.ingestor.redecode(s.job_id, args.redecode_prompt) for s in subs]
        pipe.wait([s.job_id for s in re_subs], timeout_s=3600)
        t_re = time.perf_counter() - t0
        busy = {}
        for name, w in pipe.workers.items():
            h = pipe.telemetry[name].stage_seconds.labels(w.stage)
            busy[w.stage] = (h._sum.get(), int(sum(b.get() for b in h._buckets)), w.processed)
        return {
            "t_pipe": t_pipe,
            "t_re": t_re,
            "encoded": encoded,
            "re_calls": pipe.encoder.encode_calls - calls0 - encoded,
            "hit": pipe.telemetry["decoder"].cache_hit_ratio(),
            "busy": busy,
            "label": f"{args.bus} pipeline (threads)",
        }
    finally:
        pipe.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--pages", type=int, default=3, help="pages per document")
    ap.add_argument("--mode", default="default", help="encoder mode; default = the model's own")
    ap.add_argument("--prompt", default="free_ocr")
    ap.add_argument("--redecode-prompt", default="markdown")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--checkpoint", default="")
    ap.add_argument("--tiny", action="store_true", help="a random-weight model even if a shipped one exists")
    ap.add_argument(
        "--random-size",
        choices=("embedded", "tiny"),
        default="embedded",
        help="config of the random-weight model",
    )
    ap.add_argument("--bus", choices=("kafka", "memory"), default="kafka")
    ap.add_argument("--store", choices=("s3", "local"), default="s3")
    ap.add_argument("--cache", choices=("redis", "memory"), default="redis")
    ap.add_argument("--max-wait-ms", type=int, default=200, help="pipeline micro-batch fill wait")
    ap.add_argument("--processes", action="store_true", help="stages as service processes (needs Kafka)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch/OpenMP threads per thread of work (both sides; 0 = default)",
    )
    args = ap.parse_args()
    if args.threads:
        # Before torch loads: OpenMP's thread count is per OS thread, so only the environment
        # gives the pipeline's worker threads the same setting as the in-process side.
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    threads = args.threads or torch.get_num_threads()
    model, model_desc, model_dir = load_model(args.checkpoint, args.tiny, args.random_size)
    torch.set_num_threads(threads)  # the tests' tiny-model helper pins 1 thread
    rng = random.Random(os.urandom(8))
    docs = [make_pdf([random_page(rng) for _ in range(args.pages)]) for _ in range(args.docs)]
    n_pages = args.docs * args.pages
    print(
        f"model: {model_desc}; {args.docs} docs x {args.pages} pages, mode {args.mode}, batch {args.batch}, "
        f"{args.max_new_tokens} new tokens/page, torch threads {torch.get_num_threads()}"
    )

    in_process(model, docs[:1], args.mode, args.prompt, args.batch, args.max_new_tokens)  # warm-up
    t_inproc = in_process(model, docs, args.mode, args.prompt, args.batch, args.max_new_tokens)

    if args.processes:
        r = run_processes(args, model_dir, docs, rng)
    else:
        r = run_threads(args, model, docs, rng)
    t_pipe, t_re = r["t_pipe"], r["t_re"]
    inproc_pps, pipe_pps = n_pages / t_inproc, n_pages / t_pipe
    print(f"{'in process':<27}: {t_inproc:8.2f} s  {inproc_pps:7.2f} pages/s")
    print(
        f"{r['label']:<27}: {t_pipe:8.2f} s  {pipe_pps:7.2f} pages/s  "
        f"({r['encoded']} pages encoded; store {args.store}, cache {args.cache})"
    )
    print(
        "stage busy s / batches (full pass + re-decode + warm-up): "
        + ", ".join(f"{k} {t:.2f}/{b}" for k, (t, b, _) in r["busy"].items())
    )
    print(f"ratio pipeline / in-process pages/s = {pipe_pps / inproc_pps:.3f}  (aim >= 0.9)")
    print(
        f"re-decode, new prompt: {t_re:8.2f} s  vs full pass {t_pipe:.2f} s  = {t_re / t_pipe:.3f} of a full pass; "
        f"encoder calls {r['re_calls']}; decoder token-cache hit ratio {r['hit']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
