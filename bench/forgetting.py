"""The forgetting curve at small scale: reconstruction precision of each segment by age and tokens.

A context store with a token budget receives N held-out text segments (one page each, rendered by
``ocrstream.compression.render``), one after another. Each segment is read back right after it is
added (age 0, the sharpest rung) and once more at the end, when older segments have faded to
cheaper rungs or been forgotten. One table: seq, age, mode, tokens, precision fresh and now.

    python bench/forgetting.py                        # shipped model
    python bench/forgetting.py --segments 12 --budget 120 --out forgetting.json
    python bench/forgetting.py --tiny                 # random tiny model: mechanics only
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from ocrstream.cache.memory import MemoryCache
from ocrstream.compression.context_store import ContextStore, curve_ladder, model_curve
from ocrstream.model.runtime import SHIPPED_MODEL_DIR, OcrModel
from ocrstream.store.local import LocalStore
from ocrstream.textdist import cer

REPO = Path(__file__).resolve().parents[1]

log = logging.getLogger("bench.forgetting")


def run(model, ladder, quality, texts: list[str], budget: int, max_new_tokens: int, half_life: float) -> dict:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as tmp:
        cs = ContextStore(
            "bench",
            model,
            ladder,
            budget,
            LocalStore(tmp),
            MemoryCache(),
            half_life=half_life,
            quality=quality,
        )
        fresh: dict[int, float] = {}
        for text in texts:
            (seg,) = cs.add(text) or (None,)
            if seg is None:  # budget below the cheapest rung: forgotten at once
                continue
            vt = next(v for s, v in cs.read_tokens() if s.seq == seg.seq)
            hyp = model.decode([vt], prompt="free_ocr", max_new_tokens=max_new_tokens)[0].text
            fresh[seg.seq] = max(0.0, 1 - cer(text, hyp))
        kept = {r.segment.seq: r for r in cs.read_text(max_new_tokens=max_new_tokens)}
        n = len(texts)
        rows = []
        for seq, text in enumerate(texts):
            r = kept.get(seq)
            rows.append(
                {
                    "seq": seq,
                    "age": n - 1 - seq,
                    "mode": r.segment.mode if r else "dropped",
                    "tokens": r.segment.tokens if r else 0,
                    "chars": len(text),
                    "precision_fresh": fresh.get(seq),
                    "precision_now": max(0.0, 1 - cer(text, r.text)) if r else 0.0,
                }
            )
        stats = cs.stats()
    stats.pop("segments_detail")
    return {"rows": rows, "stats": stats, "ladder": [m.name for m in ladder], "quality": quality}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--tiny", action="store_true", help="random tiny model (mechanics only)")
    ap.add_argument("--segments", type=int, default=10)
    ap.add_argument("--budget", type=int, default=None, help="token budget (default: 4 top-rung pages)")
    ap.add_argument("--half-life", type=float, default=4.0)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))  # the test suite's helpers: held-out segments, the tiny model
    from tests.documents import heldout_segments

    t0 = time.time()
    if args.tiny:
        from tests.compression.conftest import tiny_model  # the test suite's random tiny model

        model = tiny_model(0)
        args.max_new_tokens = min(args.max_new_tokens, 8)
    else:
        model = OcrModel.load(args.checkpoint)
    ladder, quality = curve_ladder(model, None if args.tiny else model_curve(args.checkpoint))
    probe = ContextStore("probe", model, ladder, 0, LocalStore(tempfile.mkdtemp()))
    size = probe.page_size
    # a line reader's context pages are document pages: longer segments fill them
    words = (40, 250) if probe.lines else (12, 60)
    texts = heldout_segments(args.segments, size, args.seed, words=words, font_px=probe.renderer.font_px)
    if probe.lines:  # what a page of the first segment costs on the sharpest rung
        top = probe.page_costs(probe.renderer.render(texts[0])[0].image)[0]
    else:
        top = probe.costs[0]
    budget = args.budget if args.budget is not None else 4 * top
    report = run(model, ladder, quality, texts, budget, args.max_new_tokens, args.half_life)
    report["provenance"] = {
        "model": "tiny-random" if args.tiny else str(args.checkpoint or SHIPPED_MODEL_DIR),
        "weights_id": model.weights_id,
        "budget": budget,
        "half_life": args.half_life,
        "seconds": round(time.time() - t0, 1),
    }
    print(f"ladder {report['ladder']}, budget {budget}, used {report['stats']['used_tokens']}")
    print(f"{'seq':>3} {'age':>3} {'mode':>8} {'tok':>4} {'chars':>5} {'fresh':>6} {'now':>6}")
    for r in report["rows"]:
        f = "-" if r["precision_fresh"] is None else f"{r['precision_fresh']:.3f}"
        print(
            f"{r['seq']:>3} {r['age']:>3} {r['mode']:>8} {r['tokens']:>4} {r['chars']:>5} {f:>6} "
            f"{r['precision_now']:>6.3f}"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
