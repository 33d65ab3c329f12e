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


LINES_RUNGS = ("lines", "lines-75", "lines-50")


def tiny_lines_model(seed: int):
    """A random-weight line reader (the embedded model's geometry at tiny dims), greedy CTC."""
    import torch

    from ocrstream.model.config import tiny_lines_config
    from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
    from ocrstream.model.runtime import OcrModel
    from ocrstream.model.tokenizer import OcrTokenizer
    from ocrstream.train.tokenizer import build_char_tokenizer, special_ids

    tok = build_char_tokenizer()
    sp = special_ids(tok)
    cfg = tiny_lines_config(vocab_size=tok.get_vocab_size())
    cfg.image_token_id = sp["image_token_id"]
    cfg.decoder.bos_token_id, cfg.decoder.eos_token_id, cfg.decoder.pad_token_id = 0, 1, 2
    cfg.ngram_whitelist = ()
    cfg.sam.max_width = 2048
    cfg.clip.max_positions = 256
    cfg.line_decoding = "ctc"
    cfg.compression_modes = LINES_RUNGS
    cfg.validate()
    torch.manual_seed(seed)
    return OcrModel(DeepseekOCRForCausalLM(cfg).eval(), OcrTokenizer(tok, image_token_id=3))


@pytest.fixture(scope="session")
def lines_model():
    return tiny_lines_model(int.from_bytes(os.urandom(4), "little"))
