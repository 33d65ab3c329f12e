"""`ocrstream context add|read|stats` end to end on a saved tiny checkpoint and a local store."""

from __future__ import annotations

import json

from ocrstream.cli import main


def test_context_commands(tiny_checkpoint, tmp_path, capsys):
    base = ["context"]
    opts = ["--store-dir", str(tmp_path), "--checkpoint", str(tiny_checkpoint)]
    assert main([*base, "add", "notes", *opts, "--text", "first note about optics", "--budget", "40"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == [0] and out["budget_tokens"] == 40
    f = tmp_path / "seg.txt"
    f.write_text("second note, a little longer than the first one")
    assert main([*base, "add", "notes", *opts, "--file", str(f)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == [1] and out["used_tokens"] <= 40
    assert main([*base, "stats", "notes", *opts]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["segments"] == 2 and st["used_tokens"] == out["used_tokens"]
    assert main([*base, "read", "notes", *opts, "--tokens"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in rows] == [0, 1] and rows[0]["tokens"] <= rows[1]["tokens"]
    assert main([*base, "read", "notes", *opts, "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out.count("--- segment") == 2
    # an unknown context without a budget: a clear message, exit 2
    assert main([*base, "add", "other", *opts, "--text", "x"]) == 2
    assert "no context 'other'" in capsys.readouterr().err
