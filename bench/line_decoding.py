"""How the line reader should read a strip: greedy CTC, the decoder alone, or CTC-guided, side by side.

On VALIDATION lines only (val-split text; never the test split or real documents), in the training
faces, half corpus text and half random characters as in training: CER and decoding seconds per
100 lines per method, for guided decoding per CTC weight, and for ``fallback`` (greedy CTC where
it is sure of every frame, guided decoding elsewhere) per ``ctc_confidence`` threshold, with the
share of lines it hands to the decoder. The strips are encoded once (the encode time, the same
for every method, is printed below the table). The shipped ``line_decoding`` / ``ctc_weight`` /
``ctc_confidence`` are chosen from this table (docs/training.md).

    python bench/line_decoding.py --model DIR            # a snapshot folder (default: the shipped model)
    python bench/line_decoding.py --checkpoint RUN/best.pt --lines 192
    python bench/line_decoding.py --weights 0.5 --confidences 0.3,0.5,0.7,0.8,0.9,0.95 --skip-ar
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="snapshot folder (default: shipped model)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="a training checkpoint instead")
    ap.add_argument("--lines", type=int, default=128)
    ap.add_argument("--mode", default="lines", help="a lines mode: its squeeze is applied to the strips")
    ap.add_argument("--weights", default="0.3,0.5,0.7", help="CTC weights for guided decoding")
    ap.add_argument(
        "--confidences",
        default="0.5,0.7,0.8,0.9,0.95",
        help="fallback ctc_confidence thresholds (with the best guided weight)",
    )
    ap.add_argument("--skip-ar", action="store_true", help="leave out the decoder alone (slow)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.fonts import train_fonts
    from ocrstream.data.lines import LineGenerator
    from ocrstream.model.ctc import ctc_confidence
    from ocrstream.model.modes import get_mode
    from ocrstream.model.runtime import OcrModel
    from ocrstream.textdist import corpus_cer

    torch.set_num_threads(args.threads)
    if args.checkpoint is not None:
        from ocrstream.train.export import export

        folder = Path(tempfile.mkdtemp())
        export(args.checkpoint, folder)
        ocr = OcrModel.load(folder)
    else:
        ocr = OcrModel.load(args.model)
    squeeze = get_mode(args.mode).squeeze
    gen = LineGenerator(
        load_corpus()["val"],
        train_fonts(),
        "bench-decoding",
        17,
        squeezes=((squeeze, 1.0),),
        max_width=ocr.config.sam.max_width,
    )
    lines = [gen.line(i) for i in range(args.lines)]
    refs = [x.text for x in lines]
    kinds = [x.kind for x in lines]
    t0 = time.perf_counter()
    views = ocr.line_views([x.strip for x in lines])
    encode_s = time.perf_counter() - t0
    with torch.no_grad():  # what fallback's threshold is compared with, per line
        conf = [ctc_confidence(ocr.model.ctc_logits(v[None, :-2]))[0] for v in views]

    def run(method: str, weight: float | None, threshold: float | None) -> dict:
        cfg = ocr.config
        cfg.line_decoding = method
        if weight is not None:
            cfg.ctc_weight = weight
        if threshold is not None:
            cfg.ctc_confidence = threshold
        w0, c0 = time.perf_counter(), time.process_time()
        seqs = ocr.read_strips(views, 512, args.mode)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        hyps = [ocr.tokenizer.decode(s, skip_special_tokens=True) for s in seqs]
        name = method if weight is None else f"guided w={weight:g}"
        decoded = {"ctc": 0.0, "fallback": None}.get(method, 1.0)
        if method == "fallback":
            name = f"fallback c={threshold:g} w={weight:g}"
            decoded = sum(c < threshold for c in conf) / len(conf)
        return {
            "method": name,
            "cer": corpus_cer(refs, hyps),
            "cer_corpus": corpus_cer(*_pick(refs, hyps, kinds, "corpus")),
            "cer_random": corpus_cer(*_pick(refs, hyps, kinds, "random")),
            "decoded_share": decoded,
            "s_per_100_lines": 100 * wall / len(lines),
            "cpu_s_per_100_lines": 100 * cpu / len(lines),
        }

    print(
        f"{len(lines)} validation lines, mode {args.mode}, {args.threads} threads; decoding only "
        "(seconds per 100 lines: wall, and CPU of this process)"
    )
    print(
        f"{'method':24s} {'CER':>7s} {'corpus':>7s} {'random':>7s} {'decoded':>7s} {'s/100':>7s} {'cpu s':>7s}"
    )
    methods = [("ctc", None, None)] + ([] if args.skip_ar else [("ar", None, None)])
    methods += [("guided", float(w), None) for w in args.weights.split(",")]
    rows = []
    for method, weight, threshold in methods:
        row = run(method, weight, threshold)
        rows.append(row)
        print(
            f"{row['method']:24s} {row['cer']:7.2%} {row['cer_corpus']:7.2%} {row['cer_random']:7.2%} "
            f"{row['decoded_share']:7.0%} {row['s_per_100_lines']:7.2f} {row['cpu_s_per_100_lines']:7.2f}",
            flush=True,
        )
        if method == "guided" and weight == float(args.weights.split(",")[-1]):
            # the thresholds, with the guided weight that read best
            best = min((r for r in rows if r["method"].startswith("guided")), key=lambda r: r["cer"])
            w = float(best["method"].split("=")[1])
            methods += [("fallback", w, float(c)) for c in args.confidences.split(",")]
    print(f"encoding the strips (every method): {100 * encode_s / len(lines):.2f} s / 100 lines")
    if args.out:
        report = {
            "lines": len(lines),
            "mode": args.mode,
            "encode_s_per_100_lines": 100 * encode_s / len(lines),
        }
        args.out.write_text(json.dumps({**report, "rows": rows}, indent=2) + "\n")
    return 0


def _pick(refs, hyps, kinds, kind):  # noqa: ANN001, ANN202
    pairs = [(r, h) for r, h, k in zip(refs, hyps, kinds, strict=True) if k == kind]
    return [r for r, _ in pairs], [h for _, h in pairs]


if __name__ == "__main__":
    sys.exit(main())
