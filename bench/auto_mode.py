"""`--mode auto` against fixed Base on a mixed set of pages: tokens spent and precision.

Pages: held-out test-split text in the training fonts at curriculum levels 0-3 (a title-like line
of large type up to full pages), rendered at the model's view side, from a split the curve was not measured on. Each
page is read twice, in the mode ``choose_mode`` picks from its pixels alone and in the model's Base
mode; precision = max(0, 1 - CER). Tokens = decoder placeholders per page (what a prompt pays).

    python bench/auto_mode.py                       # shipped model and its compression_curve.json
    python bench/auto_mode.py --checkpoint DIR --pages 36 --out auto_mode.json
    python bench/auto_mode.py --tiny                # random tiny model: mechanics only
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from ocrstream.compression.auto_mode import AutoPolicy, policy_for
from ocrstream.compression.curve import curve_from_samples, eval_pages, measure
from ocrstream.compression.ladder import model_ladder, page_tokens
from ocrstream.model.runtime import SHIPPED_MODEL_DIR, OcrModel
from ocrstream.textdist import cer

log = logging.getLogger("bench.auto_mode")


def bench_pages(n: int, size: int, seed: int, strips: bool = False) -> list[tuple]:
    """(image, text, level) pages; a line-strip model reads synthetic A4 PDF pages (level 3)."""
    if strips:
        from ocrstream.compression.curve import line_model_pages

        return [(img, text, 3) for img, text in line_model_pages(n, seed=seed + 1000)]
    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.fonts import train_fonts
    from ocrstream.data.render import PageGenerator

    gen = PageGenerator(load_corpus()["test"], train_fonts(), size, split="bench-auto", seed=seed)
    return [(p.image, p.text, p.level) for p in (gen.page(i, (0, 1, 2, 3)[i % 4]) for i in range(n))]


def read(model, images, mode, max_new_tokens: int) -> list[str]:  # noqa: ANN001
    out = []
    for i in range(0, len(images), 8):
        vts = model.encode_batch(images[i : i + 8], mode)
        out.extend(r.text for r in model.decode(vts, prompt="free_ocr", max_new_tokens=max_new_tokens))
    return out


def run(model, policy: AutoPolicy, pages, max_new_tokens: int, text_layer: bool = False) -> dict:  # noqa: ANN001
    ref = policy.reference or model_ladder(model.config)[0].name
    # text_layer: density from the exact character count, as for a PDF page with a text layer
    choices = [policy.choose(img, len(" ".join(t.split())) if text_layer else None) for img, t, _ in pages]
    modes = sorted({c.mode for c in choices} | {ref})
    hyp: dict[tuple[int, str], str] = {}
    for m in modes:
        idx = [i for i, c in enumerate(choices) if c.mode == m] if m != ref else list(range(len(pages)))
        for i, text in zip(idx, read(model, [pages[i][0] for i in idx], m, max_new_tokens), strict=True):
            hyp[(i, m)] = text
    rows = []
    for i, ((img, ref_text, level), c) in enumerate(zip(pages, choices, strict=True)):
        base_tokens = page_tokens(ref, img.size, img)[0]
        rows.append(
            {
                "page": i,
                "level": level,
                "chars": len(" ".join(ref_text.split())),
                "est_text_tokens": round(c.est_text_tokens, 1),
                "mode": c.mode,
                "tokens": c.vision_tokens,
                "expected": round(c.expected_precision, 4),
                "precision": max(0.0, 1 - cer(ref_text, hyp[(i, c.mode)])),
                "base_tokens": base_tokens,
                "base_precision": max(0.0, 1 - cer(ref_text, hyp[(i, ref)])),
                "reason": c.reason,
            }
        )
    n = len(rows)
    auto_tok, base_tok = sum(r["tokens"] for r in rows), sum(r["base_tokens"] for r in rows)
    auto_p, base_p = sum(r["precision"] for r in rows) / n, sum(r["base_precision"] for r in rows) / n
    summary = {
        "pages": n,
        "reference_mode": ref,
        "margin": policy.margin,
        "target": policy.target,
        "modes_chosen": {
            m: sum(1 for r in rows if r["mode"] == m) for m in sorted({r["mode"] for r in rows})
        },
        "tokens_auto": auto_tok,
        "tokens_base": base_tok,
        "token_savings": 1 - auto_tok / base_tok,
        "precision_auto": auto_p,
        "precision_base": base_p,
        "precision_delta": auto_p - base_p,
        "at_least_two_modes": len({r["mode"] for r in rows}) >= 2,
        "within_margin": auto_p >= base_p - policy.margin,
        "fewer_tokens": auto_tok < base_tok,
    }
    return {"summary": summary, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--tiny", action="store_true", help="random tiny model with a quickly measured curve")
    ap.add_argument("--pages", type=int, default=24)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--margin", type=float, default=None, help="override the policy's margin to Base")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    ap.add_argument("--text-layer", action="store_true", help="density from exact char counts, not pixels")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "compression"))
        from conftest import tiny_model  # the test suite's random tiny model

        model = tiny_model(0)
        ladder = model_ladder(model.config)
        size = model.config.sam.img_size
        samples = measure(model, eval_pages(6, size), ladder, max_new_tokens=8)
        curve = curve_from_samples(samples, ladder, model={"name": "tiny-random"})
        policy = AutoPolicy(curve, reference=str(size))
        args.max_new_tokens = min(args.max_new_tokens, 8)
    else:
        model = OcrModel.load(args.checkpoint)
        policy = policy_for(str(args.checkpoint or ""))
    if args.margin is not None:
        policy = AutoPolicy(policy.curve, policy.target, policy.reference, args.margin)
    pages = bench_pages(args.pages, model.config.sam.img_size, args.seed, model.config.sam.strips)
    report = run(model, policy, pages, args.max_new_tokens, args.text_layer)
    report["provenance"] = {
        "model": "tiny-random" if args.tiny else str(args.checkpoint or SHIPPED_MODEL_DIR),
        "weights_id": model.weights_id,
        "curve": policy.curve.provenance,
        "density": "text layer (exact chars)" if args.text_layer else "page image estimate",
        "seconds": round(time.time() - t0, 1),
    }
    s = report["summary"]
    print(
        f"{'page':>4} {'lvl':>3} {'chars':>5} {'estTT':>6} {'mode':>6} {'tok':>4} {'exp':>5} {'prec':>5} "
        f"{'base':>5}"
    )
    for r in report["rows"]:
        print(
            f"{r['page']:>4} {r['level']:>3} {r['chars']:>5} {r['est_text_tokens']:>6} {r['mode']:>6} "
            f"{r['tokens']:>4} {r['expected']:>5.2f} {r['precision']:>5.2f} {r['base_precision']:>5.2f}"
        )
    print(json.dumps(s, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
