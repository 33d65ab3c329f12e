"""Whole-page speed of the shipped embedded model on CPU: the bundled sample PDFs at 144 dpi, or
synthetic pages (``--synthetic N``: test-split text in the training faces, as the compression
curve measures them).

Per page: find the text lines, encode in the shipped config's default mode (for the line reader,
``lines``: the page's text lines as strips), then decode every view of the page in one call
(``OcrModel``) with the shipped line decoding (or ``--line-decoding``). Prints views, vision
tokens, generated tokens and seconds per page split into find / encode / decode, and the means.
``encode`` is the encode call less the line finding it repeats (cutting strips included).

    nice -n 10 .venv/bin/python bench/page_speed.py [--threads 2] [--max-new-tokens 160]
    nice -n 10 .venv/bin/python bench/page_speed.py --synthetic 8 [--line-decoding fallback]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pypdfium2 as pdfium
import torch

from ocrstream.model.lines import find_text_lines
from ocrstream.model.runtime import OcrModel

SAMPLES = Path(__file__).resolve().parents[1] / "ocrstream" / "assets" / "samples"


def sample_pages(dpi: int):  # noqa: ANN201 - (name, PIL image) pairs
    for pdf_path in sorted(SAMPLES.glob("*.pdf")):
        pdf = pdfium.PdfDocument(str(pdf_path))
        for i in range(len(pdf)):
            yield f"{pdf_path.stem} p{i + 1}", pdf[i].render(scale=dpi / 72).to_pil()
        pdf.close()


def synthetic_pages(n: int, seed: int):  # noqa: ANN201 - (name, PIL image) pairs
    from ocrstream.compression.curve import line_model_pages

    for i, (img, _) in enumerate(line_model_pages(n, seed)):
        yield f"synthetic {seed}:{i}", img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=160, help="per view")
    ap.add_argument("--dpi", type=int, default=144, help="for the sample PDFs")
    ap.add_argument("--synthetic", type=int, default=0, help="read N synthetic pages instead of the samples")
    ap.add_argument("--seed", type=int, default=11, help="of the synthetic pages")
    ap.add_argument("--line-decoding", choices=("guided", "fallback", "ctc", "ar"), default=None)
    ap.add_argument("--ctc-confidence", type=float, default=None, help="fallback threshold")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = OcrModel.load()
    cfg = model.config
    if args.line_decoding:
        cfg.line_decoding = args.line_decoding
    if args.ctc_confidence is not None:
        cfg.ctc_confidence = args.ctc_confidence
    print(
        f"model {cfg.name}, default mode {cfg.default_mode}, line decoding {cfg.line_decoding} "
        f"(ctc weight {cfg.ctc_weight:g}, confidence {cfg.ctc_confidence:g}), threads {args.threads}"
    )
    print(
        f"{'page':<28} {'views':>5} {'vis tok':>7} {'gen tok':>7} "
        f"{'find s':>7} {'encode s':>8} {'decode s':>8} {'total s':>7}"
    )
    pages = synthetic_pages(args.synthetic, args.seed) if args.synthetic else sample_pages(args.dpi)
    rows = []
    for name, img in pages:
        t0 = time.perf_counter()
        find_text_lines(img)
        t1 = time.perf_counter()
        vt = model.encode(img)
        t2 = time.perf_counter()
        res = model.decode([vt], max_new_tokens=args.max_new_tokens)[0]
        t3 = time.perf_counter()
        # encode() finds the lines again: its own share is the rest
        find, encode, decode = t1 - t0, max(0.0, (t2 - t1) - (t1 - t0)), t3 - t2
        rows.append((find, encode, decode))
        print(
            f"{name:<28} {vt.views:>5} {vt.n_placeholders:>7} {res.n_tokens:>7} "
            f"{find:>7.2f} {encode:>8.2f} {decode:>8.2f} {find + encode + decode:>7.2f}",
            flush=True,
        )
    n = len(rows)
    find, encode, decode = (sum(r[k] for r in rows) / n for k in range(3))
    print(
        f"{'mean over ' + str(n) + ' pages':<50} {find:>7.2f} {encode:>8.2f} {decode:>8.2f} "
        f"{find + encode + decode:>7.2f}"
    )
    print(f"mean seconds per page: {find + encode + decode:.2f} over {n} pages")


if __name__ == "__main__":
    main()
