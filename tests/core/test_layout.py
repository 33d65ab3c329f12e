"""``ocrstream.layout`` owns every storage key: no other module spells one, and each key function
gives the documented key (its parser, where it has one, reads it back)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ocrstream import layout

REPO = Path(__file__).resolve().parents[2]
PREFIXES = ("docs/", "jobs/", "tokens/", "sources/", "context/")


def _key_literals(path: Path) -> list[tuple[int, str]]:
    """String constants (also the literal start of f-strings) that begin a storage key."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        text = None
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            text = str(node.values[0].value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        if text and text.startswith(PREFIXES):
            out.append((node.lineno, text))
    return out


def test_no_module_but_layout_builds_a_key():
    found = []
    for folder in ("ocrstream", "services"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == REPO / "ocrstream" / "layout.py":
                continue
            found += [f"{path.relative_to(REPO)}:{n}: {t!r}" for n, t in _key_literals(path)]
    assert not found, "keys built outside ocrstream/layout.py:\n" + "\n".join(found)


def test_keys_are_the_documented_ones(rng):
    doc, job, mode, name = rng.randbytes(16).hex(), f"j-{rng.randrange(10**6)}", "tiny", "chat-1"
    page, seq = rng.randint(1, 99999), rng.randint(0, 10**8 - 1)
    assert layout.page_image_key(doc, mode, page) == f"docs/{doc}/{mode}/pages/{page:05d}.png"
    assert layout.page_manifest_key(doc, mode) == f"docs/{doc}/{mode}/manifest.json"
    assert layout.encoded_key(doc, mode, page).startswith(layout.encoded_prefix(doc, mode))
    assert layout.token_key("abc", mode, "w1") == f"tokens/w1/{mode}/abc.vt"
    assert layout.page_of_result_key(layout.page_result_key(job, page)) == page
    assert layout.page_of_result_key(layout.page_result_prefix(job) + "notes.txt") is None
    assert layout.bucket_marker_key("inbox", "e7") == "sources/s3/inbox/e7.json"
    assert layout.folder_marker_key("f00") == "sources/dir/f00.json"
    assert layout.context_manifest_key(name).startswith(layout.context_prefix(name))
    assert layout.context_name_of_manifest_key(layout.context_manifest_key(name)) == name
    assert layout.context_name_of_manifest_key(layout.context_page_key(name, seq)) is None
    assert layout.context_token_key(name, seq, mode) == f"context/{name}/tokens/{seq:08d}.{mode}.vt"
    assert re.fullmatch(r"context/chat-1/pages/\d{8}\.png", layout.context_page_key(name, seq))
    # the docstring's table lists every key family
    for prefix in PREFIXES:
        assert f"\n    {prefix}" in layout.__doc__
