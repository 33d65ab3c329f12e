"""Pipeline commands: ``pipeline run`` (embedded, the README main command) and ``ocr`` (the same
embedded pipeline, printing or writing markdown), ``pipeline topics``, ``submit``, ``status``,
``results``, ``redecode`` (against the configured Kafka/MinIO deployment). ``serve`` (one service,
or the embedded server) is in serve_cmds.py and calls ``cmd_serve`` here.

``ocr`` and ``pipeline run`` are one page path: the same rasterizer limits, decode settings, guard
and page join, so the same file gives the same ``<name>.md`` through either."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ocrstream.cli import progress
from ocrstream.cli.progress import PageBar

log = logging.getLogger(__name__)

SUFFIXES = (".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
SERVICES = ("ingest", "rasterizer", "encoder", "decoder", "assembler")


def _friendly(fn):
    """Errors the user can act on (bad input, a service or model missing) as one line, exit 1."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from ocrstream.errors import OcrStreamError

        try:
            return fn(args)
        except (OcrStreamError, ValueError) as exc:
            print(f"ocrstream {args.command}: {exc}", file=sys.stderr)
            return 1

    return run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="the embedded one-process pipeline and Kafka topic set-up")
    psub = p.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND")
    run = psub.add_parser("run", help="OCR files or folders in one process (no Kafka/Redis/MinIO needed)")
    run.add_argument("paths", nargs="+", help="PDF/PNG/JPEG/TIFF files or folders of them")
    run.add_argument("--out", required=True, help="output folder: <name>.md and <name>.json per document")
    run.add_argument(
        "--mode",
        default="",
        help="encoder mode (tiny, small, base, large, gundam, or a size like 512); default: the model's own",
    )
    run.add_argument(
        "--prompt",
        default="",
        help="free_ocr (default), markdown, grounding or a raw prompt containing <image>",
    )
    run.add_argument("--checkpoint", default="", help="model folder; default: the shipped embedded model")
    run.add_argument("--store", default="", help="working store folder; default <out>/.ocrstream-store")
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bar (also off in pipes and when CI is set)"
    )
    run.set_defaults(func=_friendly(cmd_pipeline_run))
    _register_ocr(sub)
    top = psub.add_parser("topics", help="create the pipeline's Kafka topics (= `ocrstream topics create`)")
    top.add_argument(
        "--partitions", type=int, default=None, help="partitions per topic (max consumers per stage)"
    )
    top.set_defaults(func=_friendly(cmd_topics))
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    s = sub.add_parser("submit", help="submit documents to the deployed pipeline (Kafka + object store)")
    s.add_argument("paths", nargs="+")
    s.add_argument("--mode", default="")
    s.add_argument("--prompt", default="")
    s.add_argument("--wait", action="store_true", help="wait for the jobs, with a progress bar")
    s.add_argument("--timeout", type=float, default=3600.0)
    s.set_defaults(func=_friendly(cmd_submit))
    st = sub.add_parser("status", help="status of a job")
    st.add_argument("job_id")
    st.set_defaults(func=_friendly(cmd_status))
    r = sub.add_parser("results", help="result of a finished job")
    r.add_argument("job_id")
    r.add_argument("--format", choices=("markdown", "json"), default="markdown")
    r.add_argument("-o", "--output", default="", help="write to this file instead of stdout")
    r.set_defaults(func=_friendly(cmd_results))
    rd = sub.add_parser("redecode", help="decode an already encoded document with a new prompt (no encoder)")
    rd.add_argument("job_id", help="a job id or document id")
    rd.add_argument("--prompt", required=True)
    rd.add_argument("--mode", default="")
    rd.add_argument("--wait", action="store_true")
    rd.set_defaults(func=_friendly(cmd_redecode))


def expand(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise SystemExit(f"ocrstream: {raw}: no such file or folder")
    if not out:
        raise SystemExit(f"ocrstream: no PDF/PNG/JPEG/TIFF files in {' '.join(paths)}")
    return out


def _register_ocr(sub: argparse._SubParsersAction) -> None:
    ocr = sub.add_parser(
        "ocr", help="OCR images/PDFs in-process (the embedded pipeline): markdown to stdout or --out"
    )
    ocr.add_argument("files", nargs="+", type=Path)
    ocr.add_argument(
        "--checkpoint", type=Path, default=None, help="snapshot folder (default: the shipped model)"
    )
    ocr.add_argument(
        "--mode",
        default="",
        help="tiny|small|base|large|gundam|gundam-m, a size spec like 512 / 1024x640, or auto (per page from"
        " text density; docs/compression.md) (default: the model's)",
    )
    ocr.add_argument(
        "--prompt",
        default="",
        help="free_ocr (default), markdown, grounding or a raw prompt containing <image>",
    )
    ocr.add_argument("--out", type=Path, default=None, help="write <name>.md + <name>.json here")
    ocr.add_argument("--max-new-tokens", type=int, default=None, help="decode budget per page (default 1024)")
    ocr.add_argument("--batch", type=int, default=None, help="pages encoded / decoded together")
    ocr.add_argument("--device", default="", help="auto|cuda|cuda:<n>|cpu (default: OCRSTREAM_DEVICE, cpu)")
    ocr.add_argument("--dtype", default="", help="bfloat16|float32 (default: bf16 on a GPU, fp32 on the CPU)")
    ocr.add_argument("--max-crops", type=int, default=None, help="tile ceiling for gundam modes (default 9)")
    ocr.add_argument("--dpi", type=int, default=None, help="PDF render resolution (default 144)")
    ocr.add_argument(
        "--skip-repeat",
        action="store_true",
        help="leave out of the markdown the pages the model failed on (the official PDF script's option)",
    )
    ocr.add_argument("--store", default="", help="working store folder; default: a temporary one")
    ocr.set_defaults(func=_friendly(cmd_ocr))


def _quiet_services(args: argparse.Namespace) -> None:
    if not args.verbose:
        # Per-document service logs would interleave with the progress bar; the summary follows.
        logging.getLogger("ocrstream.services").setLevel(logging.WARNING)


def run_embedded(
    files: list[Path],
    out: Path | None,
    store_dir: Path,
    model: Any,
    *,
    env: Mapping[str, str] | None = None,
    mode: str = "",
    prompt: str = "",
    bar: bool = True,
) -> tuple[Any, list[dict]]:
    """``files`` through the embedded pipeline (pumped here, one page bar): ``(pipe, summaries)``;
    each result is exported to ``out`` (None: left in the store for the caller)."""
    from ocrstream.pipeline.runner import Pipeline

    pipe = Pipeline.embedded(store_dir, model, env=env)
    try:
        with PageBar(bar and progress.wanted()) as pb:
            subs = pipe.submit_paths(files, mode, prompt)
            pipe.wait([s.job_id for s in subs], progress=pb.update)
    finally:
        pipe.close()
    if out is None:
        return pipe, [{"job_id": s.job_id, **pipe.ingestor.jobs.get(s.job_id)} for s in subs]
    return pipe, [pipe.export(s.job_id, out) for s in subs]


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    from ocrstream.backends.inprocess import load_model

    files = expand(args.paths)
    out = Path(args.out)
    _quiet_services(args)
    model = load_model(args.checkpoint)
    t0 = time.perf_counter()
    store = Path(args.store) if args.store else out / ".ocrstream-store"
    # the services' model folder is the one loaded here ("" = shipped): its curve serves --mode auto
    env = {**os.environ, "OCRSTREAM_CHECKPOINT_DIR": args.checkpoint}
    _, summaries = run_embedded(
        files, out, store, model, env=env, mode=args.mode, prompt=args.prompt, bar=not args.no_progress
    )
    dt = time.perf_counter() - t0
    pages = 0
    for s in summaries:
        if s["status"] == "failed":
            print(f"FAILED  {s['file']}: {s.get('reason', '')}")
            continue
        pages += s["n_pages"]
        failed = s["failed_pages"]
        flag = f" (model failed on page(s) {failed}: text-layer fallback or marked failed)" if failed else ""
        agree = s.get("text_layer_agreement")
        if agree is not None and agree < 0.5:
            flag += f" (low agreement with the PDF's own text layer: {agree:.2f})"
        print(f"{s['status']:<9} {s['file']} -> {s['markdown']} ({s['n_pages']} pages){flag}")
    print(f"{len(summaries)} documents, {pages} pages in {dt:.1f}s; results in {out.resolve()}")
    return 1 if any(s["status"] == "failed" for s in summaries) else 0


def _ocr_env(args: argparse.Namespace) -> dict[str, str]:
    """The process environment with ``ocr``'s options as the pipeline settings they are."""
    # the services' model folder is the one loaded ("" = shipped): its curve serves --mode auto
    env = {**os.environ, "OCRSTREAM_CHECKPOINT_DIR": str(args.checkpoint or "")}
    if args.max_new_tokens is not None:
        env["OCRSTREAM_DECODER_MAX_NEW_TOKENS"] = str(args.max_new_tokens)
    if args.dpi is not None:
        env["OCRSTREAM_RASTERIZER_DPI"] = str(args.dpi)
    if args.batch is not None:
        for service in ("ENCODER", "DECODER"):
            env[f"OCRSTREAM_{service}_MAX_BATCH"] = str(max(1, args.batch))
    return env


def cmd_ocr(args: argparse.Namespace) -> int:
    """A thin front of ``pipeline run``: one file without --out prints its markdown; failures go to
    stderr. ``--skip-repeat`` re-joins the markdown without the pages the model failed on."""
    from ocrstream import layout
    from ocrstream.backends.inprocess import load_model
    from ocrstream.config import CommonConfig
    from ocrstream.errors import BackendUnavailable
    from ocrstream.services.assembler.handler import join_markdown
    from ocrstream.store.base import get_json

    _quiet_services(args)
    env = _ocr_env(args)
    common = CommonConfig.from_env(env)
    try:
        model = load_model(
            common.checkpoint_dir,
            args.device or common.device,
            args.dtype or common.dtype,
            args.max_crops,
        )
    except BackendUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = 0
    files = []
    for path in args.files:
        if path.is_file():
            files.append(path)
        else:
            print(f"error: input file {path} does not exist", file=sys.stderr)
            status = 1
    if not files:
        return status
    write = args.out is not None or len(files) > 1
    out = (args.out or Path.cwd()) if write else None
    with tempfile.TemporaryDirectory(prefix="ocrstream-ocr-") as tmp:
        store = Path(args.store) if args.store else Path(tmp)
        pipe, summaries = run_embedded(files, out, store, model, env=env, mode=args.mode, prompt=args.prompt)
        for s in summaries:
            if s["status"] == "failed":
                print(f"error: {s.get('file') or s.get('filename')}: {s.get('reason', '')}", file=sys.stderr)
                status = 1
                continue
            md = pipe.store.get(layout.markdown_key(s["job_id"])).decode()
            if args.skip_repeat:
                pages = get_json(pipe.store, layout.result_key(s["job_id"]))["pages"]
                md = join_markdown([p for p in pages if not p["failed"]])
                if out is not None:
                    Path(s["markdown"]).write_text(md)
            if out is None:
                sys.stdout.write(md)
            else:
                log.info("wrote %s", s["markdown"])
    return status


def cmd_topics(args: argparse.Namespace) -> int:
    from ocrstream.cli.topics_cmds import create

    print("\n".join(st.name for st in create(partitions=args.partitions)))
    return 0


def _no_bus(msgs, span):  # noqa: ANN001 - status/results read the store only
    raise RuntimeError("this command does not publish")


def _ingestor(bus: bool = True):
    from ocrstream.bus.kafka import KafkaBus
    from ocrstream.config import CommonConfig, IngestConfig
    from ocrstream.services.ingest.handler import Ingestor
    from ocrstream.services.runtime import publish_messages
    from ocrstream.services.wiring import build_store
    from ocrstream.telemetry import Telemetry, tracer_provider

    common, cfg = CommonConfig.from_env(), IngestConfig.from_env()
    tel = Telemetry("cli", tracer_provider("cli", common.otlp_endpoint))
    kw = dict(max_bytes=cfg.max_bytes, default_mode=cfg.default_mode, default_prompt=cfg.default_prompt)
    if not bus:
        return Ingestor(build_store(common), _no_bus, tel, **kw)
    producer = KafkaBus(common.kafka_bootstrap, "ocrstream-cli").producer()

    def publish(msgs, span):  # noqa: ANN001
        publish_messages(producer, common.topic_prefix, msgs, span)

    return Ingestor(build_store(common), publish, tel, flush=producer.flush, **kw)


def _wait(ing, job_ids: list[str], timeout: float) -> list[dict]:
    from ocrstream.layout import TERMINAL

    deadline = time.monotonic() + timeout
    with PageBar(progress.wanted()) as bar:
        while True:
            recs = [ing.status(j) for j in job_ids]
            bar.update(sum(r["pages_done"] for r in recs), sum(r.get("n_pages", 0) for r in recs))
            if all(r["status"] in TERMINAL for r in recs) or time.monotonic() > deadline:
                return recs
            time.sleep(1.0)


def cmd_submit(args: argparse.Namespace) -> int:
    ing = _ingestor()
    subs = []
    for f in expand(args.paths):
        sub = ing.submit(f.read_bytes(), f.name, args.mode, args.prompt)
        subs.append(sub)
        print(f"{sub.job_id}  {f}{'  (duplicate)' if sub.duplicate else ''}")
    if args.wait:
        for rec in _wait(ing, [s.job_id for s in subs], args.timeout):
            print(f"{rec['job_id']}  {rec['status']}  {rec.get('reason', '')}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(_ingestor(bus=False).status(args.job_id), indent=1))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    data = _ingestor(bus=False).result(args.job_id, args.format)
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.write(data.decode())
    return 0


def cmd_redecode(args: argparse.Namespace) -> int:
    ing = _ingestor()
    sub = ing.redecode(args.job_id, args.prompt, args.mode)
    print(f"{sub.job_id}{'  (exists)' if sub.duplicate else ''}")
    if args.wait:
        (rec,) = _wait(ing, [sub.job_id], 3600)
        print(f"{rec['job_id']}  {rec['status']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.service == "ingest":
        from ocrstream.services.ingest.main import main

        return main()
    from ocrstream.services.serve import serve

    return serve(args.service)
