"""`ocrstream checkpoint verify DIR` (the model's own command; `ocrstream ocr` is a front of the
embedded pipeline, in pipeline_cmds.py).

`checkpoint verify` builds the model from DIR/config.json on the meta device and compares names
and shapes with the safetensors headers (no tensor data read).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    ck = subparsers.add_parser("checkpoint", help="model checkpoint tools")
    ck_sub = ck.add_subparsers(dest="checkpoint_command", metavar="ACTION")
    ver = ck_sub.add_parser(
        "verify", help="check a snapshot folder's tensor names/shapes against its config.json"
    )
    ver.add_argument("dir", type=Path)
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    ver.set_defaults(func=cmd_verify)
    ck.set_defaults(func=lambda a: (ck.print_help(), 2)[1])


def cmd_verify(args: argparse.Namespace) -> int:
    from ocrstream.model.weights import CheckpointError, verify_snapshot

    try:
        rep = verify_snapshot(args.dir)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "ok": rep.ok,
                    "expected": rep.n_expected,
                    "found": rep.n_found,
                    "missing": rep.missing,
                    "unexpected": rep.unexpected,
                    "misshapen": [
                        {"name": n, "expected": list(w), "found": list(g)} for n, w, g in rep.misshapen
                    ],
                    "errors": rep.other,
                },
                indent=2,
            )
        )
    else:
        for line in rep.lines():
            print(line)
        print("OK: exact match" if rep.ok else "FAILED")
    return 0 if rep.ok else 1
