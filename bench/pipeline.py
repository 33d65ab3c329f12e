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


def load_model(checkpoint: str, tiny: bool):
    import torch

    from ocrstream.model.runtime import SHIPPED_MODEL_DIR, OcrModel

    if checkpoint:
        return OcrModel.load(checkpoint), f"checkpoint {checkpoint}"
    if not tiny and (SHIPPED_MODEL_DIR / "config.json").exists():
        return OcrModel.load(None), "shipped embedded model"
    from tests.pipeline.conftest import tiny_ocr_model

    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    return tiny_ocr_model(), "tiny random-weight model (tests' config)"


def in_process(model, docs: list[bytes], mode: str, prompt: str, batch: int, max_new: int) -> float:
    from ocrstream.services.rasterizer.raster import Limits, rasterize

    t0 = time.perf_counter()
    images = []
    for data in docs:
        _, pages = rasterize(data, Limits())
        images.extend(p.image for p in pages)
    for i in range(0, len(images), batch):
        vts = model.encode_batch(images[i : i + batch], None if mode == "default" else mode)
        model.decode(vts, prompt=prompt, max_new_tokens=max_new, temperature=0.0, ngram=(20, 90))
    return time.perf_counter() - t0


def build_pipeline(args, model):
    from ocrstream.services.wiring import build_cache, build_store

    from ocrstream.bus.memory import MemoryBus
    from ocrstream.config import CommonConfig, DecoderConfig, EncoderConfig, WorkerConfig
    from ocrstream.pipeline.threaded import ThreadedPipeline

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
        from ocrstream.bus.kafka import KafkaBus

        bus = KafkaBus(common.kafka_bootstrap, "ocrstream-bench")
    else:
        bus = MemoryBus()
    dec = DecoderConfig(max_new_tokens=args.max_new_tokens, ladder="t=0.0")
    wcfg = WorkerConfig(max_batch=args.batch, max_wait_ms=args.max_wait_ms, metrics_port=0)
    env = {"OCRSTREAM_INGEST_DEFAULT_MODE": args.mode, "OCRSTREAM_INGEST_DEFAULT_PROMPT": args.prompt}
    pipe = ThreadedPipeline(
        common,
        bus,
        build_store(common),
        build_cache(common, EncoderConfig()),
        model,
        env=env,
        decoder_cfg=dec,
        worker_cfg=wcfg,
        partitions=2,
    )
    return pipe.start()


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
    ap.add_argument(
        "--tiny", action="store_true", help="tiny random-weight model even if a shipped one exists"
    )
    ap.add_argument("--bus", choices=("kafka", "memory"), default="kafka")
    ap.add_argument("--store", choices=("s3", "local"), default="s3")
    ap.add_argument("--cache", choices=("redis", "memory"), default="redis")
    ap.add_argument("--max-wait-ms", type=int, default=200, help="pipeline micro-batch fill wait")
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
    model, model_desc = load_model(args.checkpoint, args.tiny)
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
        re_calls = pipe.encoder.encode_calls - calls0 - encoded
        hit = pipe.telemetry["decoder"].cache_hit_ratio()
        busy = {}
        for name, w in pipe.workers.items():
            h = pipe.telemetry[name].stage_seconds.labels(w.stage)
            n_batches = sum(b.get() for b in h._buckets)
            busy[w.stage] = (h._sum.get(), int(n_batches), w.processed)
    finally:
        pipe.stop()

    inproc_pps, pipe_pps = n_pages / t_inproc, n_pages / t_pipe
    print(f"in process           : {t_inproc:8.2f} s  {inproc_pps:7.2f} pages/s")
    print(
        f"{args.bus} pipeline{' ' * (11 - len(args.bus))}: {t_pipe:8.2f} s  {pipe_pps:7.2f} pages/s  "
        f"({encoded} pages encoded; store {args.store}, cache {args.cache})"
    )
    print(
        "stage busy s / batches / records (full pass + re-decode): "
        + ", ".join(f"{k} {t:.2f}/{b}/{n}" for k, (t, b, n) in busy.items())
    )
    print(f"ratio pipeline / in-process pages/s = {pipe_pps / inproc_pps:.3f}  (aim >= 0.9)")
    print(
        f"re-decode, new prompt: {t_re:8.2f} s  vs full pass {t_pipe:.2f} s  = {t_re / t_pipe:.3f} of a full pass; "
        f"encoder calls {re_calls}; decoder token-cache hit ratio {hit:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
