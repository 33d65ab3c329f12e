"""`ocrstream checkpoint verify` end to end (in-process CLI)."""

from __future__ import annotations

import json

from ocrstream.cli import main
from ocrstream.model.weights import read_manifest_tsv
from tests.model.test_weights import DATA, MANIFEST, write_sparse_snapshot


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
