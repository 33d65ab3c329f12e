"""Fixtures for compression tests: a tiny random-weight OcrModel and a fresh random source."""

from __future__ import annotations

import os
import random

import pytest

SPECIALS = ["<unk>", "<bos>", "<eos>", "<pad>"]


def char_tokenizer(vocab_size: int):
    """Character-level tokenizer; ``<image>`` takes the last id (the tiny config's image_token_id)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab: dict[str, int] = {}
    for t in [*SPECIALS, "\n", *(chr(c) for c in range(32, 127))]:
        if len(vocab) < vocab_size - 1:
            vocab.setdefault(t, len(vocab))
    vocab["<image>"] = vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"<[a-z]+>|."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(["<bos>", "<eos>", "<pad>", "<image>"])
    return tok


def tiny_model(seed: int):
    import torch

    from ocrstream.model.config import tiny_test_config
    from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
    from ocrstream.model.runtime import OcrModel
    from ocrstream.model.tokenizer import OcrTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = tiny_test_config()
    tok = OcrTokenizer(char_tokenizer(cfg.decoder.vocab_size), image_token_id=cfg.image_token_id)
    cfg.decoder.bos_token_id = tok.role_id("bos")
    cfg.decoder.eos_token_id = tok.role_id("eos")
    return OcrModel(DeepseekOCRForCausalLM(cfg).eval(), tok)


@pytest.fixture(scope="session")
def model():
    return tiny_model(int.from_bytes(os.urandom(4), "little"))


@pytest.fixture
def rng() -> random.Random:
    seed = int.from_bytes(os.urandom(8), "little")
    r = random.Random(seed)
    r.seed_value = seed  # type: ignore[attr-defined] - reported in assertion messages
    return r
