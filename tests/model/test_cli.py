"""`ocrstream checkpoint verify` and `ocrstream ocr` end to end (in-process CLI)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image, ImageDraw

from ocrstream.cli import main
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.weights import read_manifest_tsv, save_snapshot

from .helpers import make_tokenizer, tiny_config_for
from .test_weights import DATA, MANIFEST, write_sparse_snapshot


def test_verify_sparse_official_snapshot(tmp_path, capsys):
    write_sparse_snapshot(tmp_path / "snap", read_manifest_tsv(MANIFEST), DATA / "official-config.json")
    assert main(["checkpoint", "verify", str(tmp_path / "snap")]) == 0
    assert "OK: exact match" in capsys.readouterr().out


def test_verify_reports_problems(tmp_path, capsys):
    manifest = read_manifest_tsv(MANIFEST)
    manifest.pop("model.image_newline")
    manifest["model.view_seperator"].shape = (1281,)
    write_sparse_snapshot(tmp_path / "snap", manifest, DATA / "official-config.json")
    assert main(["checkpoint", "verify", "--json", str(tmp_path / "snap")]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["missing"] == ["model.image_newline"]
    assert rep["misshapen"] == [{"name": "model.view_seperator", "expected": [1280], "found": [1281]}]
    assert main(["checkpoint", "verify", str(tmp_path / "nope")]) == 1


@pytest.fixture
def snapshot(tmp_path, seed):
    tok_path = make_tokenizer(tmp_path / "snap")
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tok_path)).get_vocab_size()
    model = DeepseekOCRForCausalLM(tiny_config_for(vocab)).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(std=0.5)
    save_snapshot(model, tmp_path / "snap")
    return tmp_path / "snap"


def make_inputs(tmp_path):
    img = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(img).text((5, 5), "hello", fill="black")
    img.save(tmp_path / "a.png")
    pdf = tmp_path / "doc.pdf"
    img.save(pdf, "PDF", save_all=True, append_images=[img.rotate(90, expand=True)], resolution=72)
    return tmp_path / "a.png", pdf


def test_ocr_single_file_to_stdout(tmp_path, snapshot, capsys):
    png, _ = make_inputs(tmp_path)
    code = main(
        ["ocr", str(png), "--checkpoint", str(snapshot), "--prompt", "free_ocr", "--max-new-tokens", "5"]
    )
    assert code == 0
    assert isinstance(capsys.readouterr().out, str)


def test_ocr_pdf_and_image_to_out_dir(tmp_path, snapshot):
    png, pdf = make_inputs(tmp_path)
    out = tmp_path / "out"
    code = main(
        [
            "ocr",
            str(png),
            str(pdf),
            "--checkpoint",
            str(snapshot),
            "--mode",
            "256x128",
            "--prompt",
            "grounding",
            "--max-new-tokens",
            "4",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert (out / "a.md").exists() and (out / "doc.md").exists()
    data = json.loads((out / "doc.json").read_text())
    assert [p["page"] for p in data["pages"]] == [1, 2]
    # 144 dpi rendering of a 320x240 pt page
    assert (data["pages"][0]["width"], data["pages"][0]["height"]) == (640, 480)
    assert "<--- Page Split --->" in (out / "doc.md").read_text()


def test_ocr_without_shipped_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import ocrstream.model.runtime as rt

    monkeypatch.setattr(rt, "SHIPPED_MODEL_DIR", tmp_path / "none")
    png, _ = make_inputs(tmp_path)
    assert main(["ocr", str(png)]) == 2
    assert "shipped embedded model is not installed" in capsys.readouterr().err
