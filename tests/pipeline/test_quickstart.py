"""The README main command's engine on the bundled samples with the shipped model: one markdown per
sample with one section per page; and the embedded model's CER acceptance (<= 3%, strict) measured
on the model's own output (never on the text-layer fallback)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pypdfium2 as pdfium
import pytest

from ocrstream.config import DecoderConfig
from ocrstream.model.grounding import to_markdown
from ocrstream.model.runtime import SHIPPED_MODEL_DIR

SAMPLES = Path(__file__).resolve().parents[2] / "ocrstream" / "assets" / "samples"
CER_LIMIT = 0.03

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    from ocrstream.model.runtime import OcrModel
    from ocrstream.pipeline.runner import Pipeline

    if not (SHIPPED_MODEL_DIR / "config.json").exists():
        # The model ships with the repository: missing in CI is a failure, locally a skip.
        (pytest.fail if IN_CI else pytest.skip)(f"the shipped model is not in {SHIPPED_MODEL_DIR}")

    pdfs = sorted(SAMPLES.glob("*.pdf"))
    assert pdfs, f"no sample PDFs in {SAMPLES}"
    out = tmp_path_factory.mktemp("quickstart")
    # Greedy only: the acceptance measures the model's first answer, as a user sees it.
    pipe = Pipeline.embedded(out / ".store", OcrModel.load(), decoder_cfg=DecoderConfig(ladder="t=0.0"))
    return pdfs, out, pipe.run(pdfs, out, prompt="markdown")  # as scripts/quickstart.sh asks


def test_one_markdown_per_sample_one_section_per_page(quickstart):
    pdfs, out, summaries = quickstart
    for pdf, s in zip(pdfs, summaries, strict=True):
        n = len(pdfium.PdfDocument(str(pdf)))
        assert s["status"] in ("completed", "degraded") and s["n_pages"] == n
        md = (out / f"{pdf.stem}.md").read_text()
        assert [int(x) for x in re.findall(r"<!-- page (\d+) -->", md)] == list(range(1, n + 1))
        pages = json.loads((out / f"{pdf.stem}.json").read_text())["pages"]
        assert [p["page"] for p in pages] == list(range(1, n + 1))
        # each sample opens with its title in larger type: a markdown heading
        assert re.search(r"(?m)^## \S", md), md[:300]


def test_cer_on_samples(quickstart):
    from ocrstream.textdist import cer

    pdfs, out, _ = quickstart
    scores = {}
    for pdf in pdfs:
        pages = json.loads((out / f"{pdf.stem}.json").read_text())["pages"]
        hyp = "\n".join(to_markdown(p["raw"], 999, 999).text for p in pages)  # model output, even if not used
        hyp = re.sub(r"(?m)^#+ ", "", hyp)  # markdown heading marks are not text
        scores[pdf.stem] = cer(pdf.with_suffix(".txt").read_text(), hyp)
    mean = sum(scores.values()) / len(scores)
    detail = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
    assert mean <= CER_LIMIT, detail
