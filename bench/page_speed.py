"""Whole-page speed of the shipped embedded model on CPU: the bundled sample PDFs at 144 dpi.

Per page: encode in the shipped config's default mode (for the line reader, ``lines``: the page's
text lines as strips), then decode every view of the page in one call (``OcrModel``). Prints
views, vision tokens, generated tokens and seconds per page, and the mean seconds per page.

    nice -n 10 .venv/bin/python bench/page_speed.py [--threads 2] [--max-new-tokens 160]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pypdfium2 as pdfium
import torch

from ocrstream.model.runtime import OcrModel

SAMPLES = Path(__file__).resolve().parents[1] / "ocrstream" / "assets" / "samples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=160, help="per view")
    ap.add_argument("--dpi", type=int, default=144)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = OcrModel.load()
    print(f"model {model.config.name}, default mode {model.config.default_mode}, threads {args.threads}")
    print(
        f"{'page':<28} {'views':>5} {'vis tok':>7} {'gen tok':>7} {'encode s':>8} {'decode s':>8} {'total s':>7}"
    )
    totals = []
    for pdf_path in sorted(SAMPLES.glob("*.pdf")):
        pdf = pdfium.PdfDocument(str(pdf_path))
        for i in range(len(pdf)):
            img = pdf[i].render(scale=args.dpi / 72).to_pil()
            t0 = time.perf_counter()
            vt = model.encode(img)
            t1 = time.perf_counter()
            res = model.decode([vt], max_new_tokens=args.max_new_tokens)[0]
            t2 = time.perf_counter()
            totals.append(t2 - t0)
            name = f"{pdf_path.stem} p{i + 1}"
            print(
                f"{name:<28} {vt.views:>5} {vt.n_placeholders:>7} {res.n_tokens:>7} "
                f"{t1 - t0:>8.2f} {t2 - t1:>8.2f} {t2 - t0:>7.2f}"
            )
        pdf.close()
    print(f"mean seconds per page: {sum(totals) / len(totals):.2f} over {len(totals)} pages")


if __name__ == "__main__":
    main()
