"""Synthetic data: determinism, split hygiene, fonts, sample PDFs."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from ocrstream.data.corpus import SAMPLE_SOURCES, load_corpus, split_of
from ocrstream.data.fonts import HELDOUT_FONT, heldout_fonts, train_fonts
from ocrstream.data.render import LEVELS, PageGenerator


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


def test_page_generation_is_deterministic(corpus):
    gen_a = PageGenerator(corpus["train"], train_fonts(), 256, split="train", seed=3)
    gen_b = PageGenerator(corpus["train"], train_fonts(), 256, split="train", seed=3)
    for level in LEVELS:
        idx = random.randrange(10_000)
        a, b = gen_a.page(idx, level), gen_b.page(idx, level)
        assert a.text == b.text and a.markdown == b.markdown and a.font == b.font
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
        assert a.text.strip(), f"empty page at level {level}"
    # a different seed gives different pages
    gen_c = PageGenerator(corpus["train"], train_fonts(), 256, split="train", seed=4)
    texts_b = [gen_b.page(i, 3).text for i in range(5)]
    texts_c = [gen_c.page(i, 3).text for i in range(5)]
    assert texts_b != texts_c


def test_splits_are_disjoint_by_source(corpus):
    sources = {s: {p.source for p in corpus[s]} for s in ("train", "val", "test", "samples")}
    for a in sources:
        for b in sources:
            if a < b:
                assert not (sources[a] & sources[b]), f"{a} and {b} share sources"
    assert len(corpus["train"]) > 10 * len(corpus["test"]) > 0
    for s, srcs in sources.items():
        for src in list(srcs)[:200]:
            assert split_of(src) == s
    assert all(split_of(s) == "samples" for s in SAMPLE_SOURCES)
    # no paragraph text occurs in two splits (the corpus is de-duplicated)
    train_text = {p.text for p in corpus["train"]}
    assert not any(p.text in train_text for p in corpus["test"])


def test_heldout_font_never_in_training_fonts():
    names = {f.name for f in train_fonts()}
    paths = {f.path for f in train_fonts()}
    held = heldout_fonts()
    assert [f.name for f in held] == [HELDOUT_FONT]
    assert HELDOUT_FONT not in names and held[0].path not in paths


def test_rendered_text_comes_from_its_split(corpus):
    gen = PageGenerator(corpus["test"], train_fonts(), 256, split="test", seed=1)
    test_words = {w for p in corpus["test"] for w in p.text.split()}
    page = gen.page(random.randrange(1000), 3)
    for line in page.text.splitlines():
        for w in line.split():
            if w != "-":
                assert any(w in tw for tw in test_words), w


def test_sample_pdfs_regenerate_identically(tmp_path):
    from ocrstream.data.samples import SAMPLES_DIR, make_samples

    made = make_samples(tmp_path)
    assert made
    for pdf in made:
        shipped = SAMPLES_DIR / pdf.name
        assert shipped.exists(), f"{shipped} not bundled"
        assert hashlib.sha256(pdf.read_bytes()).digest() == hashlib.sha256(shipped.read_bytes()).digest()
        txt = pdf.with_suffix(".txt")
        assert txt.read_text() == (SAMPLES_DIR / txt.name).read_text()


def test_sample_text_not_in_training_corpus(corpus):
    from ocrstream.data.samples import sample_sources

    train_text = " ".join(p.text for p in corpus["train"])
    for name, src in sample_sources().items():
        lines = [ln for ln in src.splitlines() if len(ln) > 40]
        assert lines, name
        assert not any(ln in train_text for ln in lines), f"sample {name} text occurs in training data"
