"""Every key in values.yaml carries a `# --` doc comment directly above it (helm-docs style).
(That every key is declared in values.schema.json follows from the schema's closed objects, checked
in test_validation.py.)"""

from __future__ import annotations

import re

from .helmlib import CHART

KEY = re.compile(r"^(\s*)([A-Za-z0-9_.\-/]+):(\s|$)")


def undocumented_keys(text: str) -> list[str]:
    missing = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if not m:
            continue
        # Walk up over continuation comment lines to the first comment of the block.
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        if j < 0 or not lines[j].strip().startswith("# --") or lines[j].strip() == "# --":
            missing.append(f"line {i + 1}: {m.group(2)}")
    return missing


def test_every_values_key_is_documented() -> None:
    assert undocumented_keys((CHART / "values.yaml").read_text()) == []


def test_docs_check_catches_a_bare_key() -> None:
    text = "# -- documented\na: 1\n# a plain comment\nb: 2\nc:\n  # -- nested ok\n  d: 3\n"
    assert undocumented_keys(text) == ["line 4: b", "line 5: c"]
