"""The 'docs' stage's data: code lines, made-up command lines, typographic quotes, stage init."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ocrstream.data.code import load_code_lines, shell_line, smarten
from ocrstream.data.corpus import load_corpus, split_of
from ocrstream.data.fonts import coverage, font_by_name, train_fonts
from ocrstream.data.lines import LineGenerator


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def code():
    return load_code_lines()


def test_smarten_opens_after_space_and_closes_otherwise():
    assert smarten('"quoted" text') == "\u201cquoted\u201d text"
    assert smarten("a package's file") == "a package\u2019s file"
    assert smarten("('single') and 'x'") == "(\u2018single\u2019) and \u2018x\u2019"
    assert smarten("plain") == "plain"
    # fresh text: only quotes change, nothing else moves
    rng = random.Random()
    s = "".join(rng.choice("ab \"'(x") for _ in range(200))
    t = smarten(s)
    assert len(t) == len(s)
    assert all(a == b for a, b in zip(s, t, strict=True) if a not in "\"'")
    assert '"' not in t and "'" not in t


def test_code_lines_split_by_file_like_the_corpus(code):
    assert {"train", "val", "test"} <= set(code)
    assert len(code["train"]) > 10_000
    seen: dict[str, str] = {}
    for split, lines in code.items():
        for p in random.sample(lines, min(500, len(lines))):
            assert split_of(p.source) == split
            assert seen.setdefault(p.source, split) == split
            assert p.text == p.text.strip() and p.text.isascii() and 6 <= len(p.text) <= 110


def test_shell_lines_are_printable_commands_paths_or_references(corpus):
    rng = random.Random()
    lines = [shell_line(corpus["train"], rng) for _ in range(300)]
    assert all(t.strip() and t.isprintable() for t in lines)
    assert sum("/" in t for t in lines) > 60  # paths are common
    assert sum("(" in t and ")" in t for t in lines) > 20  # name(8) references
    assert len(set(lines)) > 250


def _docs_mix(corpus, code, seed: int) -> LineGenerator:
    """Train lines mixed like the docs stage's: code lines, typographic quotes, inline code."""
    return LineGenerator(
        corpus["train"], train_fonts(), "train", seed, random_share=0.3, code_lines=code["train"],
        code_share=0.2, smart_quotes=0.5, inline_code=0.25,
    )  # fmt: skip


def test_docs_mix_draws_code_in_monospace(corpus, code):
    seed = random.randrange(1000)
    gen = _docs_mix(corpus, code, seed)
    lines = [gen.line(i) for i in range(300)]
    kinds = [x.kind for x in lines]
    assert 0.1 < kinds.count("code") / len(kinds) < 0.3, f"seed {seed}"
    mono = sum("Mono" in x.font for x in lines if x.kind == "code") / max(1, kinds.count("code"))
    assert mono > 0.6, f"seed {seed}: {mono:.2f} of code lines in a monospace face"
    for x in lines[:40]:
        assert x.strip.height == 32 and x.text
        assert set(x.text) <= coverage(font_by_name(x.font).path) | {" "} or x.kind == "corpus"
    # deterministic like every split
    again = _docs_mix(corpus, code, seed)
    for i in random.sample(range(300), 5):
        a, b = lines[i], again.line(i)
        assert a.text == b.text and np.array_equal(np.asarray(a.strip), np.asarray(b.strip))


def test_docs_mix_gives_smart_quotes_to_its_share_of_quoted_prose(corpus, code, monkeypatch):
    """Of the prose lines that hold a quote or an apostrophe, about ``smart_quotes`` (0.5) are set
    with typographic ones. A 300-line draw holds about 6 such lines (none curly on 5% of seeds), so
    this counts 100 of them; the strips are not drawn (the count needs thousands of lines, and what
    is rendered is checked above). Share on 300 seeds: 0.38-0.64, mean 0.50."""
    from PIL import Image

    monkeypatch.setattr(LineGenerator, "_render", lambda self, rng, *a: Image.new("L", (32, 32)))
    seed = random.randrange(1_000_000)
    gen = _docs_mix(corpus, code, seed)
    quoted = curly = 0
    for i in range(20_000):
        x = gen.line(i)
        if x.kind == "corpus" and any(c in x.text for c in "'\"\u2018\u2019\u201c\u201d"):
            quoted += 1
            curly += any(c in x.text for c in "\u2018\u2019\u201c\u201d")
            if quoted == 100:
                break
    assert quoted == 100, f"seed {seed}: only {quoted} quoted prose lines in {i + 1}"
    assert 0.3 <= curly / quoted <= 0.7, f"seed {seed}: {curly} of {quoted} quoted prose lines curly"


def test_docs_settings_off_draw_the_same_lines_as_before(corpus, code):
    """Held-out splits are the same lines whether or not the generator knows of code lines."""
    seed = random.randrange(1000)
    plain = LineGenerator(corpus["val"], train_fonts(), "val", seed)
    off = LineGenerator(corpus["val"], train_fonts(), "val", seed, code_lines=code["val"])
    for i in random.sample(range(10_000), 6):
        a, b = plain.line(i), off.line(i)
        assert a.text == b.text and np.array_equal(np.asarray(a.strip), np.asarray(b.strip))


def test_doc_pages_are_deterministic_manual_pages(corpus, code):
    from ocrstream.data.doc_pages import DocPageMaker

    seed = random.randrange(1000)
    a = DocPageMaker(corpus["val"], code["val"], train_fonts(), "val", seed)
    b = DocPageMaker(corpus["val"], code["val"], train_fonts(), "val", seed)
    for i in random.sample(range(1000), 2):
        x, y = a.page(i), b.page(i)
        assert x.pdf == y.pdf and x.lines == y.lines, f"seed {seed} page {i}"
        assert len(x.lines) > 15, f"seed {seed} page {i}: {len(x.lines)} lines"
        assert all(t == t.strip() and t for t in x.lines)
    # 12 pages: curly quotes are about one line in 60, and 6 pages held none on 2 of the 1,000 seeds
    texts = [ln for i in range(12) for ln in a.page(i).lines]
    assert any("/" in t for t in texts)  # paths and code made it onto the pages
    assert any(c in t for t in texts for c in "\u2019\u201d\u201c"), f"seed {seed}"
