"""Fixtures for compression tests: a tiny random-weight OcrModel and a fresh random source."""

from __future__ import annotations

import os
import random

import pytest

from tests.tiny import tiny_ocr_model

# Role tokens only (no grounding tags): the tokenizer then covers more of the alphabet.
ROLE_TOKENS = ["<unk>", "<bos>", "<eos>", "<pad>"]


def tiny_model(seed: int):
    return tiny_ocr_model(seed, specials=ROLE_TOKENS)


@pytest.fixture(scope="session")
def model():
    return tiny_model(int.from_bytes(os.urandom(4), "little"))


@pytest.fixture
def rng() -> random.Random:
    seed = int.from_bytes(os.urandom(8), "little")
    r = random.Random(seed)
    r.seed_value = seed  # type: ignore[attr-defined] - reported in assertion messages
    return r
