"""Offline text corpora for synthetic pages, split by source.

Text comes from what every machine with this repo already has: docstrings of the Python standard
library and of the installed site-packages (read with ``ast``, nothing is imported) and the licence
texts in ``/usr/share/common-licenses``. Every paragraph carries its source id; the split is a
hash of that id, so no source file contributes to two splits. A few licence texts are reserved
for the bundled sample PDFs and never appear in any training or evaluation split.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import re
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Licence texts kept out of every split: the bundled sample PDFs are made from them.
SAMPLE_SOURCES = ("license:MPL-2.0", "license:Apache-2.0", "license:BSD")
LICENSE_DIR = Path("/usr/share/common-licenses")
CORPUS_VERSION = 1
_MIN_CHARS = 60
_MAX_CHARS = 1200


@dataclass(frozen=True)
class Paragraph:
    source: str
    text: str


def split_of(source: str) -> str:
    """Deterministic split for a source id: ~88% train, 4% val, 8% test; sample sources -> 'samples'."""
    if source in SAMPLE_SOURCES:
        return "samples"
    h = int.from_bytes(hashlib.sha256(source.encode()).digest()[:4], "big") % 100
    return "train" if h < 88 else ("val" if h < 92 else "test")


_CODE_RE = re.compile(r"(>>>|\.\.\.\s|[{}\[\]=<>]{1}.*[{}\[\]=<>]|::\s*$|^\s*[-=~^*]{4,})")


def clean_paragraph(text: str) -> str | None:
    """Whitespace-normalised printable-ASCII paragraph, or None if it is code-like or too short."""
    lines = [ln.strip() for ln in text.splitlines()]
    if any(ln.startswith((">>>", "$ ", "#", "..", ":param", "Args:", "Returns:")) for ln in lines):
        return None
    t = " ".join(ln for ln in lines if ln)
    t = re.sub(r"\s+", " ", t).strip()
    if len(t) < _MIN_CHARS or len(t) > _MAX_CHARS:
        return None
    if not t.isascii() or any(not (c.isprintable()) for c in t):
        return None
    # Code-ish or markup-heavy text (brackets, operators, backquotes) is a poor reading target.
    sym = sum(c in "{}[]()<>=_`|\\*#@$%^~" for c in t)
    if sym / len(t) > 0.04 or _CODE_RE.search(t):
        return None
    letters = sum(c.isalpha() for c in t)
    if letters / len(t) < 0.7:
        return None
    if max((len(w) for w in t.split()), default=0) > 24:
        return None
    return t


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="strict"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError, RecursionError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def python_roots() -> list[tuple[str, Path]]:
    """(label, directory) pairs: the stdlib and this interpreter's site-packages."""
    roots = [("stdlib", Path(sysconfig.get_paths()["stdlib"]))]
    purelib = Path(sysconfig.get_paths()["purelib"])
    if purelib.is_dir():
        roots.append(("site", purelib))
    return roots


def iter_docstring_paragraphs(roots: Iterable[tuple[str, Path]] | None = None) -> Iterator[Paragraph]:
    for label, root in roots or python_roots():
        files = sorted(p for p in root.rglob("*.py") if "test" not in p.parts and "tests" not in p.parts)
        for path in files:
            if label == "stdlib" and "site-packages" in path.parts:
                continue
            source = f"{label}:{path.relative_to(root).as_posix()}"
            for doc in _docstrings(path):
                for block in re.split(r"\n\s*\n", doc):
                    t = clean_paragraph(block)
                    if t:
                        yield Paragraph(source, t)


def iter_license_paragraphs(directory: Path = LICENSE_DIR) -> Iterator[Paragraph]:
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.is_symlink():
            continue
        source = f"license:{path.name}"
        text = path.read_text(encoding="utf-8", errors="replace")
        for block in re.split(r"\n\s*\n", text):
            t = clean_paragraph(block)
            if t:
                yield Paragraph(source, t)


def build_corpus(out: Path, roots: Iterable[tuple[str, Path]] | None = None) -> dict[str, int]:
    """Write ``out`` (JSONL: source, split, text), de-duplicated; returns paragraph counts per split."""
    seen: set[str] = set()
    counts: dict[str, int] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")  # concurrent first uses each write their own
    with tmp.open("w") as f:
        for para in _chain(iter_license_paragraphs(), iter_docstring_paragraphs(roots)):
            key = para.text.lower()
            if key in seen:
                continue
            seen.add(key)
            split = split_of(para.source)
            counts[split] = counts.get(split, 0) + 1
            f.write(json.dumps({"source": para.source, "split": split, "text": para.text}) + "\n")
    tmp.replace(out)
    log.info("corpus %s: %s", out, counts)
    return counts


def _chain(*its: Iterable[Paragraph]) -> Iterator[Paragraph]:
    for it in its:
        yield from it


def default_corpus_path() -> Path:
    return Path.home() / ".cache" / "ocrstream" / "data" / f"corpus-v{CORPUS_VERSION}.jsonl"


def load_corpus(path: Path | None = None, build: bool = True) -> dict[str, list[Paragraph]]:
    """Paragraphs per split (train/val/test/samples); builds the corpus file on first use."""
    path = path or default_corpus_path()
    if not path.exists():
        if not build:
            raise FileNotFoundError(f"corpus {path} missing; run `ocrstream data corpus`")
        build_corpus(path)
    out: dict[str, list[Paragraph]] = {s: [] for s in (*SPLITS, "samples")}
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            out.setdefault(row["split"], []).append(Paragraph(row["source"], row["text"]))
    return out


def corpus_fingerprint(path: Path | None = None) -> str:
    path = path or default_corpus_path()
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


if __name__ == "__main__":  # pragma: no cover - manual use
    logging.basicConfig(level=logging.INFO)
    print(build_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else default_corpus_path()))
