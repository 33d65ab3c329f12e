"""The `ocrstream` command line.

Each command group lives in its own module that exposes `register(subparsers)`; this file only
collects them, so groups owned by different parts of the code base never edit the same file.
Modules are imported lazily by name so a role without torch (ingest, rasterizer) can still run
its own commands. The training commands are the training package's own (``ocrstream/train/cli.py``):
named here, never imported by serving code (tests/test_import_rules.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# module name -> one-line reason it exists; each must define register(subparsers).
COMMAND_MODULES = (
    "ocrstream.cli.model_cmds",  # checkpoint verify
    "ocrstream.cli.pipeline_cmds",  # pipeline run, ocr, submit, status, results, redecode, pipeline topics
    "ocrstream.cli.serve_cmds",  # serve: the embedded server (console, OpenAI API) or one service
    "ocrstream.train.cli",  # data, tokenizer, train, eval: the training package's own commands
    "ocrstream.cli.cluster_cmds",  # cluster status
    "ocrstream.cli.context_cmds",  # context add, read, stats (optical context compression)
    "ocrstream.cli.topics_cmds",  # topics create, check (Kafka topics: an admin step, not the services')
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocrstream", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A command group whose optional dependencies are not installed in this image.
            if exc.name and exc.name.startswith("ocrstream.cli"):
                continue
            logging.getLogger(__name__).debug("command group %s unavailable: %s", name, exc)
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
