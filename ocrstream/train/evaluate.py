"""Evaluation of the embedded line reader through the runtime (``OcrModel``): what ships is scored.

Splits (all deterministic, all text from corpus splits never trained on):

* ``lines``: single lines of test-split text in the training faces, cut like training lines
  (degraded like them: noise, blur, JPEG, scale jitter);
* ``font``: the same in the held-out face (Noto Serif);
* ``lines_random``: random-character lines (the other half of training lines), training faces:
  reading with no language prior, reported beside the text lines;
* ``pages``: synthetic A4 PDFs (``ocrstream.data.pages``) in the training TrueType faces,
  rasterised by the pipeline's rasterizer and read through the page -> lines path;
* ``pages_font``: such pages in the held-out face;
* ``pages_docs``: synthetic technical-manual pages (``ocrstream.data.doc_pages``): inline code in
  a monospace face, typographic quotes, framed code listings, ruled tables with wrapped cells,
  footnotes in smaller type; test-split prose and code.

CER = summed edit distance / summed reference length after ``charset.normalize`` (NFKC,
whitespace runs as one space). Compression is reported as characters per vision token (the
tokenizer is character-level, so that is also text tokens per vision token).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

from ocrstream.provenance import git_commit
from ocrstream.textdist import cer, corpus_cer, normalize

SEED = 7


def eval_lines(  # noqa: ANN201
    split: str,
    n: int,
    heldout_font: bool = False,
    squeeze: float = 1.0,
    seed: int = SEED,
    random_share: float = 0.0,
):
    """The first ``n`` lines of a held-out line split (LineSample list); ``random_share`` of them
    random characters instead of corpus text."""
    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.fonts import heldout_fonts, train_fonts
    from ocrstream.data.lines import LineGenerator

    corpus = load_corpus()
    fonts = heldout_fonts() if heldout_font else train_fonts()
    name = f"eval-{split}{'-font' if heldout_font else ''}-{squeeze:g}"
    if random_share:
        name += f"-random{random_share:g}"
    gen = LineGenerator(corpus[split], fonts, name, seed, random_share, squeezes=((squeeze, 1.0),))
    return [gen.line(i) for i in range(n)]


def eval_pages(split: str, n: int, heldout_font: bool = False, seed: int = SEED):  # noqa: ANN201
    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.fonts import heldout_fonts, train_fonts
    from ocrstream.data.pages import PageMaker

    fonts = heldout_fonts() if heldout_font else train_fonts()
    maker = PageMaker(load_corpus()[split], fonts, f"eval-{split}{'-font' if heldout_font else ''}", seed)
    return [maker.page(i) for i in range(n)]


def eval_doc_pages(split: str, n: int, seed: int = SEED):  # noqa: ANN201
    from ocrstream.data.code import load_code_lines
    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.doc_pages import DocPageMaker
    from ocrstream.data.fonts import train_fonts

    code = load_code_lines().get(split, [])
    maker = DocPageMaker(load_corpus()[split], code, train_fonts(), f"eval-{split}", seed)
    return [maker.page(i) for i in range(n)]


def score_lines(ocr, samples, mode: str = "lines") -> dict:  # noqa: ANN001 - OcrModel, LineSample list
    t0 = time.perf_counter()
    hyps = ocr.read_line_images([s.strip for s in samples], mode)
    secs = time.perf_counter() - t0
    refs = [s.text for s in samples]
    n_vt = sum(ocr.strip_tokens(s.strip.width) for s in samples)
    return {
        "cer": corpus_cer(refs, hyps),
        "n": len(samples),
        "chars_per_vision_token": sum(len(r) for r in refs) / max(1, n_vt),
        "seconds": secs,
        "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps, strict=True))[:4]],
    }


def score_pages(ocr, pages, mode: str = "lines") -> dict:  # noqa: ANN001 - OcrModel, SyntheticPage list
    from ocrstream.raster import Limits, rasterize

    refs, hyps, n_vt, secs = [], [], 0, 0.0
    for p in pages:
        _, it = rasterize(p.pdf, Limits())
        img = next(iter(it)).image
        t0 = time.perf_counter()
        vt = ocr.encode(img, mode)
        res = ocr.decode([vt], prompt="free_ocr")[0]
        secs += time.perf_counter() - t0
        n_vt += sum(vt.view_lengths) - 2 * len(vt.view_lengths)
        refs.append(p.text)
        hyps.append(res.text)
    return {
        "cer": corpus_cer(refs, hyps),
        "n": len(pages),
        "chars_per_vision_token": sum(len(normalize(r)) for r in refs) / max(1, n_vt),
        "seconds_per_page": secs / max(1, len(pages)),
        "per_page_cer": [round(cer(r, h), 4) for r, h in zip(refs, hyps, strict=True)],
    }


def score_samples(ocr, mode: str = "lines") -> dict:  # noqa: ANN001 - OcrModel
    """The bundled sample PDFs (licence text no split holds) against the text they were made from."""
    from ocrstream.data.samples import SAMPLES_DIR, sample_sources
    from ocrstream.raster import Limits, rasterize

    refs, hyps, per = [], [], {}
    for name, ref in sample_sources().items():
        _, it = rasterize((SAMPLES_DIR / f"{name}.pdf").read_bytes(), Limits())
        hyp = "\n".join(ocr.decode([ocr.encode(p.image, mode)], prompt="free_ocr")[0].text for p in it)
        refs.append(ref)
        hyps.append(hyp)
        per[name] = round(cer(ref, hyp), 4)
    return {"cer": corpus_cer(refs, hyps), "n": len(refs), "per_document_cer": per}


def evaluate_model(ocr, n_lines: int = 256, n_pages: int = 12, seed: int = SEED) -> dict:  # noqa: ANN001
    """Every split above, through ``ocr`` (an ``OcrModel`` of a line-strip model)."""
    return {
        "samples": score_samples(ocr),
        "lines": score_lines(ocr, eval_lines("test", n_lines, seed=seed)),
        "font": score_lines(ocr, eval_lines("test", n_lines, heldout_font=True, seed=seed)),
        "lines_random": score_lines(ocr, eval_lines("test", n_lines // 2, seed=seed, random_share=1.0)),
        "pages": score_pages(ocr, eval_pages("test", n_pages, seed=seed)),
        "pages_font": score_pages(
            ocr, eval_pages("test", max(1, n_pages // 2), heldout_font=True, seed=seed)
        ),
        "pages_docs": score_pages(ocr, eval_doc_pages("test", n_pages, seed=seed)),
    }


def write_eval(splits: dict, path: Path, provenance: dict) -> None:
    path.write_text(
        json.dumps(
            {
                "schema": 2,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "git_commit": git_commit(),
                "metric": "CER = summed edit distance / summed reference length, NFKC + whitespace collapsed",
                "splits": splits,
                "provenance": provenance,
            },
            indent=2,
        )
        + "\n"
    )
