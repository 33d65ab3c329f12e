"""How the line reader should read a strip: greedy CTC, the decoder alone, or CTC-guided, side by side.

On VALIDATION lines only (val-split text; never the test split or real documents), in the training
faces, half corpus text and half random characters as in training: CER and seconds per 100 lines
per method, and for guided decoding per CTC weight. The shipped ``line_decoding`` / ``ctc_weight``
are chosen from this table (docs/training.md).

    python bench/line_decoding.py --model DIR            # a snapshot folder (default: the shipped model)
    python bench/line_decoding.py --checkpoint RUN/best.pt --lines 192
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
    ap.add_argument("--weights", default="0.3,0.5,0.7", help="CTC weights for guided decoding")
    ap.add_argument("--confidences", default="0.6,0.8,0.9", help="fallback thresholds (with the best weight)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.fonts import train_fonts
    from ocrstream.data.lines import LineGenerator
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
    gen = LineGenerator(
        load_corpus()["val"], train_fonts(), "bench-decoding", 17, max_width=ocr.config.sam.max_width
    )
    lines = [gen.line(i) for i in range(args.lines)]
    refs = [x.text for x in lines]
    kinds = [x.kind for x in lines]
    methods = [("ctc", None, None), ("ar", None, None)]
    methods += [("guided", float(w), None) for w in args.weights.split(",")]
    rows = []
    for method, weight, conf in methods:
        ocr.config.line_decoding = method
        if weight is not None:
            ocr.config.ctc_weight = weight
        if conf is not None:
            ocr.config.ctc_confidence = conf
        t0 = time.perf_counter()
        hyps = ocr.read_line_images([x.strip for x in lines])
        secs = time.perf_counter() - t0
        name = method if weight is None else f"guided w={weight:g}"
        if conf is not None:
            name = f"fallback c={conf:g} w={weight:g}"
        row = {
            "method": name,
            "cer": corpus_cer(refs, hyps),
            "cer_corpus": corpus_cer(*_pick(refs, hyps, kinds, "corpus")),
            "cer_random": corpus_cer(*_pick(refs, hyps, kinds, "random")),
            "s_per_100_lines": 100 * secs / len(lines),
        }
        rows.append(row)
        if method == "guided" and weight == float(args.weights.split(",")[-1]):
            best = min((r for r in rows if r["method"].startswith("guided")), key=lambda r: r["cer"])
            w = float(best["method"].split("=")[1])
            methods += [("fallback", w, float(c)) for c in args.confidences.split(",")]
        print(
            f"{row['method']:16s} CER {row['cer']:7.2%}  corpus {row['cer_corpus']:7.2%}  random {row['cer_random']:7.2%}"
            f"  {row['s_per_100_lines']:6.2f} s / 100 lines",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps({"lines": len(lines), "rows": rows}, indent=2) + "\n")
    return 0


def _pick(refs, hyps, kinds, kind):  # noqa: ANN001, ANN202
    pairs = [(r, h) for r, h, k in zip(refs, hyps, kinds, strict=True) if k == kind]
    return [r for r, _ in pairs], [h for _, h in pairs]


if __name__ == "__main__":
    sys.exit(main())
