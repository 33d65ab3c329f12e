"""`ocrstream context add|read|stats`: a context store that keeps text as fading vision tokens.

By default the store is a local folder (``--store-dir``) and the hot tier an in-process cache;
``--from-env`` uses the service settings instead (OCRSTREAM_STORE / OCRSTREAM_CACHE: MinIO and
Redis). See docs/compression.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_DIR = Path.home() / ".cache" / "ocrstream" / "context"


def register(subparsers: argparse._SubParsersAction) -> None:
    ctx = subparsers.add_parser("context", help="optical context store with progressive forgetting")
    sub = ctx.add_subparsers(dest="context_cmd", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("name", help="context name ([A-Za-z0-9_.-], up to 64 chars)")
        p.add_argument(
            "--store-dir", type=Path, default=DEFAULT_DIR, help=f"local store folder (default {DEFAULT_DIR})"
        )
        p.add_argument("--from-env", action="store_true", help="store and cache from OCRSTREAM_* settings")
        p.add_argument(
            "--checkpoint", type=Path, default=None, help="model snapshot (default: the shipped model)"
        )

    add = sub.add_parser("add", help="add a text segment (the newest context)")
    common(add)
    src = add.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the segment's text")
    src.add_argument("--file", type=Path, help="read the segment from a file ('-' = stdin)")
    add.add_argument(
        "--budget", type=int, default=None, help="token budget (required when creating; changes it otherwise)"
    )
    add.add_argument("--half-life", type=float, default=4.0, help="segments per halving of the age weight")
    add.set_defaults(func=_guard(_add))

    rd = sub.add_parser("read", help="read the kept context back, oldest first")
    common(rd)
    rd.add_argument(
        "--tokens", action="store_true", help="list vision-token segments instead of decoding text"
    )
    rd.add_argument("--max-new-tokens", type=int, default=256)
    rd.set_defaults(func=_guard(_read))

    st = sub.add_parser("stats", help="budget, tokens used, segments per mode")
    common(st)
    st.set_defaults(func=_guard(_stats))


def _guard(fn):  # noqa: ANN001, ANN202
    """Bad input and missing models end the command with the reason, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        from ocrstream.errors import NotFound

        try:
            return fn(args)
        except (NotFound, FileNotFoundError, ValueError) as exc:
            print(f"ocrstream context: {exc}", file=sys.stderr)
            return 2

    return run


def _open(args: argparse.Namespace, **create):  # noqa: ANN003, ANN202 - ContextStore
    from ocrstream.compression.context_store import ContextStore, curve_ladder, model_curve
    from ocrstream.model.runtime import OcrModel

    if args.from_env:
        from ocrstream.config import CommonConfig
        from ocrstream.services.wiring import build_cache, build_store

        common = CommonConfig.from_env()
        store, cache = build_store(common), build_cache(common)
    else:
        from ocrstream.cache.memory import MemoryCache
        from ocrstream.store.local import LocalStore

        store, cache = LocalStore(args.store_dir), MemoryCache()
    from ocrstream.config import DecoderConfig
    from ocrstream.guard import DecodeSettings

    model = OcrModel.load(args.checkpoint)
    create["decode"] = DecodeSettings.from_config(DecoderConfig.from_env())  # as the pipeline decodes
    if create.get("budget_tokens") is not None:
        create["ladder"], create["quality"] = curve_ladder(model, model_curve(args.checkpoint))
    else:
        create.pop("budget_tokens", None)
    return ContextStore.open(args.name, model, store, cache, **create)


def _add(args: argparse.Namespace) -> int:
    if args.file is not None:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
    else:
        text = args.text
    cs = _open(args, budget_tokens=args.budget, half_life=args.half_life)
    added = cs.add(text)
    st = cs.stats()
    print(
        json.dumps(
            {
                "added": [s.seq for s in added],
                "used_tokens": st["used_tokens"],
                "budget_tokens": st["budget_tokens"],
                "per_mode": st["per_mode"],
            }
        )
    )
    return 0


def _read(args: argparse.Namespace) -> int:
    cs = _open(args)
    if args.tokens:
        for seg, vt in cs.read_tokens():
            print(
                json.dumps(
                    {"seq": seg.seq, "mode": seg.mode, "tokens": vt.n_placeholders, "key": cs.token_key(seg)}
                )
            )
        return 0
    for r in cs.read_text(max_new_tokens=args.max_new_tokens):
        print(f"--- segment {r.segment.seq} ({r.segment.mode}, {r.segment.tokens} tokens)")
        print(r.text)
    return 0


def _stats(args: argparse.Namespace) -> int:
    st = _open(args).stats()
    st.pop("segments_detail")
    print(json.dumps(st, indent=1))
    return 0
