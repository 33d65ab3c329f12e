"""The embedded model beside Tesseract 5 on real born-digital PDF pages, in one run.

The pages come from Debian documentation packages (fetched with ``apt-get download``, never
installed, never used for training or for choosing any threshold): Debian Reference, the
Developer's Reference, the New Maintainers' Guide, the debmake guide, Debian Policy and the
gnuplot manual. From each PDF, pages at fixed fractions of its length are taken (those whose
text layer has fewer than 300 characters, such as figure-only pages, are skipped). Each page is
rendered at 144 dpi by the pipeline's rasterizer; the reference is the page's PDF text layer
(with pdfium's hyphenation mark read as the hyphen and line break the page prints).

Both engines read the same PNG on the same cores: ocrstream through ``OcrModel`` (page -> lines,
the shipped decoding), Tesseract 5 (``tesseract PAGE - --psm 3 -l eng``, OMP_THREAD_LIMIT = the
torch thread count). CER = summed edit distance / summed reference length, NFKC + whitespace
collapsed, per engine over all pages; seconds per page = wall time of reading (Tesseract:
the process, including its start).

    python bench/embedded_vs_tesseract.py [--pages-per-doc 5] [--threads 2] [--out results.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("OCRSTREAM_CACHE", Path.home() / ".cache" / "ocrstream")) / "realdocs"
# (Debian package, PDF path inside it)
DOCS = (
    ("debian-reference-en", "usr/share/debian-reference/debian-reference.en.pdf"),
    ("developers-reference", "usr/share/developers-reference/developers-reference.pdf"),
    ("maint-guide", "usr/share/doc/maint-guide/maint-guide.en.pdf"),
    ("debmake-doc", "usr/share/doc/debmake-doc/debmake-doc.en.pdf"),
    ("debian-policy", "usr/share/doc/debian-policy/policy.pdf.gz"),
    ("gnuplot-doc", "usr/share/doc/gnuplot/gnuplot.pdf"),
)
FRACTIONS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)
MIN_CHARS = 300


def fetch(package: str, member: str) -> Path:
    """The PDF from ``package``'s .deb (downloaded once into the cache, never installed)."""
    out = CACHE / f"{package}.pdf"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "-q", package], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], check=True)
        src = Path(tmp) / "x" / member
        data = gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
    out.write_bytes(data)
    return out


def pick_pages(pdf_path: Path, per_doc: int) -> list[tuple[int, str]]:
    """(0-based page index, text layer) for pages at FRACTIONS of the document."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(pdf_path))
    n = len(doc)
    out = []
    for f in FRACTIONS:
        i = min(n - 1, int(f * n))
        page = doc[i]
        tp = page.get_textpage()
        text = tp.get_text_range()
        tp.close()
        page.close()
        if len(" ".join(text.split())) >= MIN_CHARS and all(i != j for j, _ in out):
            out.append((i, text))
        if len(out) == per_doc:
            break
    doc.close()
    return out


def reference_text(layer: str) -> str:
    """What the page shows, from its text layer: pdfium writes U+FFFE (a noncharacter) where the
    typesetter hyphenated a word at a line end; the page prints a hyphen and a line break there,
    and both engines read it so."""
    return layer.replace("\ufffe", "-\n")


def render(pdf_path: Path, index: int):  # noqa: ANN201 - PIL image
    import pypdfium2 as pdfium

    from ocrstream.raster import Limits

    doc = pdfium.PdfDocument(str(pdf_path))
    page = doc[index]
    img = page.render(scale=Limits().dpi / 72, rev_byteorder=True).to_pil().convert("RGB")
    page.close()
    doc.close()
    return img


def tesseract(png: Path, threads: int) -> tuple[str, float]:
    env = {**os.environ, "OMP_THREAD_LIMIT": str(threads)}
    t0 = time.perf_counter()
    res = subprocess.run(
        ["tesseract", str(png), "-", "--psm", "3", "-l", "eng"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return res.stdout, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages-per-doc", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--out", type=Path, default=None, help="write the per-page results here (JSON)")
    args = ap.parse_args(argv)
    if shutil.which("tesseract") is None:
        print("tesseract not found: apt-get install tesseract-ocr tesseract-ocr-eng", file=sys.stderr)
        return 2
    import torch

    from ocrstream.data.charset import normalize
    from ocrstream.model.runtime import OcrModel
    from ocrstream.textdist import levenshtein

    torch.set_num_threads(args.threads)
    ocr = OcrModel.load(args.model)
    mode = ocr.config.default_mode
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for package, member in DOCS:
            pdf = fetch(package, member)
            for index, layer in pick_pages(pdf, args.pages_per_doc):
                img = render(pdf, index)
                png = Path(tmp) / f"{package}-{index}.png"
                img.save(png)
                t0 = time.perf_counter()
                ours = ocr.decode([ocr.encode(img, mode)], prompt="free_ocr")[0].text
                t_ours = time.perf_counter() - t0
                tess, t_tess = tesseract(png, args.threads)
                ref = normalize(reference_text(layer))
                rows.append(
                    {
                        "doc": package,
                        "page": index + 1,
                        "ref_chars": len(ref),
                        "ours_errors": levenshtein(ref, normalize(ours)),
                        "tess_errors": levenshtein(ref, normalize(tess)),
                        "ours_s": t_ours,
                        "tess_s": t_tess,
                    }
                )
                r = rows[-1]
                print(
                    f"{package:22s} p{index + 1:<4d} chars {r['ref_chars']:5d}  CER ours "
                    f"{r['ours_errors'] / r['ref_chars']:6.1%} tesseract {r['tess_errors'] / r['ref_chars']:6.1%}"
                    f"   s/page ours {t_ours:5.2f} tesseract {t_tess:5.2f}",
                    flush=True,
                )
    chars = sum(r["ref_chars"] for r in rows)
    cer_ours = sum(r["ours_errors"] for r in rows) / chars
    cer_tess = sum(r["tess_errors"] for r in rows) / chars
    s_ours = sum(r["ours_s"] for r in rows) / len(rows)
    s_tess = sum(r["tess_s"] for r in rows) / len(rows)
    summary = {
        "pages": len(rows),
        "threads": args.threads,
        "cer_ours": cer_ours,
        "cer_tesseract": cer_tess,
        "cer_ratio": cer_ours / max(cer_tess, 1e-9),
        "s_per_page_ours": s_ours,
        "s_per_page_tesseract": s_tess,
        "time_ratio": s_ours / s_tess,
        "goal": "CER ratio <= 1.5 and time ratio <= 1.5",
    }
    print()
    print(f"{'':24s}{'ocrstream':>12s}{'tesseract 5':>14s}{'ratio':>9s}")
    print(
        f"{'CER (' + str(len(rows)) + ' pages)':24s}{cer_ours:12.2%}{cer_tess:14.2%}{summary['cer_ratio']:9.2f}"
    )
    print(f"{'seconds per page':24s}{s_ours:12.2f}{s_tess:14.2f}{summary['time_ratio']:9.2f}")
    print(f"goal: both ratios <= 1.5 ({args.threads} threads each)")
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "pages": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
