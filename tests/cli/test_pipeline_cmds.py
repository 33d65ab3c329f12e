"""``ocrstream pipeline run`` (the README main command's engine) on a folder, with a checkpoint."""

from __future__ import annotations

import json

from ocrstream.cli import main
from tests.documents import make_pdf, make_tiff, random_words


def test_pipeline_run_folder(tmp_path, rng, tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("OCRSTREAM_DECODER_MAX_NEW_TOKENS", "12")
    monkeypatch.setenv("OCRSTREAM_DECODER_LADDER", "t=0.0;t=0.5")
    src = tmp_path / "in"
    src.mkdir()
    texts = [random_words(rng, 2) for _ in range(2)]
    (src / "a.pdf").write_bytes(make_pdf(texts))
    (src / "b.tiff").write_bytes(make_tiff(3))
    (src / "broken.pdf").write_bytes(b"%PDF-1.7\n" + bytes(200))
    (src / "notes.txt").write_text("ignored: not a document")
    rc = main(
        [
            "pipeline",
            "run",
            str(src),
            "--out",
            str(tmp_path / "out"),
            "--mode",
            "tiny",
            "--checkpoint",
            str(tiny_checkpoint),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1  # one document failed
    assert "FAILED  broken.pdf: corrupt: PDF cannot be parsed" in out
    assert "3 documents, 5 pages" in out
    a = json.loads((tmp_path / "out" / "a.json").read_text())
    b = json.loads((tmp_path / "out" / "b.json").read_text())
    assert (a["n_pages"], b["n_pages"]) == (2, 3)
    assert [p["text"] for p in a["pages"] if p["method"] == "text_layer"] == [
        t for t, p in zip(texts, a["pages"], strict=True) if p["method"] == "text_layer"
    ]
    # images have no text layer: a page the model could not read is marked failed, never invented
    assert all(p["method"] in ("model", "failed") for p in b["pages"])
    assert (tmp_path / "out" / "b.md").read_text().count("<!-- page ") == 3
    assert not (tmp_path / "out" / "broken.md").exists()
