"""`ocrstream ocr` is a front of the embedded pipeline: the same file gives byte-identical markdown
through `ocrstream ocr` and `ocrstream pipeline run` (the bundled samples, the shipped model), and
its options are the pipeline's settings (tiny random-weight checkpoint)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from ocrstream.cli import main
from ocrstream.model.runtime import SHIPPED_MODEL_DIR

SAMPLES = Path(__file__).resolve().parents[2] / "ocrstream" / "assets" / "samples"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
MARKER = re.compile(r"<!-- page (\d+) -->")


def _pages(md: str) -> list[int]:
    return [int(n) for n in MARKER.findall(md)]


def _decoded(js: Path) -> list[tuple]:
    """What was read per page (not the job ids and timings, which differ per run)."""
    return [
        (p["page"], p["text"], p["raw"], p["method"], p["mode"], p["prompt"], p["tokens"])
        for p in json.loads(js.read_text())["pages"]
    ]


def test_ocr_and_pipeline_run_give_the_same_markdown_on_the_samples(tmp_path, capsys, monkeypatch):
    if not (SHIPPED_MODEL_DIR / "config.json").exists():
        (pytest.fail if IN_CI else pytest.skip)(f"the shipped model is not in {SHIPPED_MODEL_DIR}")
    monkeypatch.setenv("CI", "true")  # no progress bars in the captured output
    pdfs = sorted(SAMPLES.glob("*.pdf"))
    assert pdfs, f"no sample PDFs in {SAMPLES}"
    assert main(["pipeline", "run", str(SAMPLES), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert main(["ocr", *map(str, pdfs), "--out", str(tmp_path / "ocr")]) == 0
    for pdf in pdfs:
        run = (tmp_path / "run" / f"{pdf.stem}.md").read_bytes()
        assert (tmp_path / "ocr" / f"{pdf.stem}.md").read_bytes() == run, pdf.name
        assert _pages(run.decode()) and run.decode().replace("<!-- page", "").strip()  # text was read
        assert _decoded(tmp_path / "ocr" / f"{pdf.stem}.json") == _decoded(
            tmp_path / "run" / f"{pdf.stem}.json"
        )
    capsys.readouterr()
    # one file without --out: its markdown on stdout, the same bytes again
    assert main(["ocr", str(pdfs[0])]) == 0
    assert capsys.readouterr().out == (tmp_path / "run" / f"{pdfs[0].stem}.md").read_text()


def make_inputs(tmp_path: Path) -> tuple[Path, Path]:
    img = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(img).text((5, 5), "hello", fill="black")
    img.save(tmp_path / "a.png")
    pdf = tmp_path / "doc.pdf"
    img.save(pdf, "PDF", save_all=True, append_images=[img.rotate(90, expand=True)], resolution=72)
    return tmp_path / "a.png", pdf


@pytest.fixture
def short_ladder(monkeypatch):
    # A random model loops: one greedy and one sampled rung keep the run short and cover both.
    monkeypatch.setenv("OCRSTREAM_DECODER_LADDER", "t=0.0;t=0.7")
    monkeypatch.setenv("CI", "true")


def test_ocr_options_are_the_pipeline_settings(tmp_path, tiny_checkpoint, short_ladder):
    png, pdf = make_inputs(tmp_path)
    args = ["ocr", str(png), str(pdf), "--checkpoint", str(tiny_checkpoint), "--mode", "tiny"]
    args += ["--prompt", "grounding", "--max-new-tokens", "4", "--batch", "1"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    assert main([*args, "--dpi", "72", "--out", str(tmp_path / "out72")]) == 0
    for out, (w, h) in ((tmp_path / "out", (640, 480)), (tmp_path / "out72", (320, 240))):
        doc = json.loads((out / "doc.json").read_text())
        assert [p["page"] for p in doc["pages"]] == [1, 2]
        assert (doc["pages"][0]["width"], doc["pages"][0]["height"]) == (w, h)  # --dpi: the rasterizer's
        assert (doc["pages"][1]["width"], doc["pages"][1]["height"]) == (h, w)
        for p in doc["pages"]:
            assert p["prompt"] == "grounding" and p["mode"] == "tiny"
            assert all(a["n_tokens"] <= 4 for a in p["attempts"] if "n_tokens" in a)  # --max-new-tokens
        assert _pages((out / "doc.md").read_text()) == [1, 2]
        assert _pages((out / "a.md").read_text()) == [1]


def test_ocr_prints_one_file_and_skip_repeat_drops_failed_pages(
    tmp_path, tiny_checkpoint, short_ladder, capsys
):
    _, pdf = make_inputs(tmp_path)
    args = ["ocr", str(pdf), "--checkpoint", str(tiny_checkpoint), "--mode", "tiny", "--max-new-tokens", "6"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "doc.md").read_text()
    capsys.readouterr()
    assert main(args) == 0  # sampled rungs are seeded by what they decode: the same text again
    assert capsys.readouterr().out == md
    assert main([*args, "--skip-repeat", "--out", str(tmp_path / "skip")]) == 0
    pages = json.loads((tmp_path / "skip" / "doc.json").read_text())["pages"]
    assert _pages(md) == [1, 2]
    assert _pages((tmp_path / "skip" / "doc.md").read_text()) == [p["page"] for p in pages if not p["failed"]]


def test_ocr_reports_missing_files_and_reads_the_rest(tmp_path, tiny_checkpoint, short_ladder, capsys):
    png, _ = make_inputs(tmp_path)
    args = ["ocr", str(tmp_path / "nope.pdf"), str(png), "--checkpoint", str(tiny_checkpoint)]
    assert main([*args, "--mode", "tiny", "--max-new-tokens", "4", "--out", str(tmp_path / "out")]) == 1
    assert "nope.pdf does not exist" in capsys.readouterr().err
    assert _pages((tmp_path / "out" / "a.md").read_text()) == [1]


def test_ocr_without_shipped_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import ocrstream.model.runtime as rt

    monkeypatch.setattr(rt, "SHIPPED_MODEL_DIR", tmp_path / "none")
    png, _ = make_inputs(tmp_path)
    assert main(["ocr", str(png)]) == 2
    assert "shipped embedded model is not installed" in capsys.readouterr().err


def test_ocr_auto_mode_reads_the_curve_of_its_checkpoint(
    tmp_path, tiny_checkpoint, short_ladder, monkeypatch
):
    """``--mode auto`` picks each page's mode from the curve beside ``--checkpoint`` (the encoder's
    hook), not the shipped model's; ``pipeline run`` the same."""
    import shutil

    from ocrstream.compression.curve import CompressionCurve, CurvePoint, ModeCurve
    from ocrstream.model.modes import get_mode
    from tests.documents import make_pdf

    monkeypatch.delenv("OCRSTREAM_CHECKPOINT_DIR", raising=False)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    # A curve no other model has: 160 is the cheapest rung that reads, so every page takes it.
    precision = {"320": 1.0, "256": 1.0, "160": 1.0, "128": 0.0}
    curve = {
        m: ModeCurve(get_mode(m), [CurvePoint(0.1, p, 5), CurvePoint(50.0, p, 5)])
        for m, p in precision.items()
    }
    CompressionCurve(curve, chars_per_token=3.0).save(ckpt / "compression_curve.json")
    src = tmp_path / "in"
    src.mkdir()
    (src / "mixed.pdf").write_bytes(make_pdf(["Hi", "ordinary words of small print " * 3]))
    common = ["--checkpoint", str(ckpt), "--mode", "auto", "--max-new-tokens", "4"]
    assert main(["ocr", str(src / "mixed.pdf"), *common, "--out", str(tmp_path / "ocr")]) == 0
    assert main(["pipeline", "run", str(src), *common[:4], "--out", str(tmp_path / "run")]) == 0
    for out in ("ocr", "run"):
        pages = json.loads((tmp_path / out / "mixed.json").read_text())["pages"]
        assert [p["tokens"]["vision"] for p in pages] == [13, 13]  # 160's placeholders on both pages
