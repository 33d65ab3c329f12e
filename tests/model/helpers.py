"""Test helpers: a small real tokenizer and a tiny model matching it."""

from __future__ import annotations

from pathlib import Path

SPECIALS = [
    "<pad>",
    "<bos>",
    "<eos>",
    "<image>",
    "<|ref|>",
    "<|/ref|>",
    "<|det|>",
    "<|/det|>",
    "<|grounding|>",
    "<td>",
    "</td>",
]
TEXT = [
    "Free OCR. Convert the document to markdown. OCR this image. Parse the figure.",
    "Describe this image in detail. Locate the object in the image.",
    "The quick brown fox jumps over the lazy dog. 0123456789 tables, titles and text.",
]


def make_tokenizer(folder: Path, vocab_size: int = 160) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TEXT * 5, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    tok.save(str(path))
    return path


def tiny_config_for(vocab_size: int):
    from ocrstream.model.config import tiny_test_config

    cfg = tiny_test_config(vocab_size=vocab_size)
    cfg.image_token_id = 3
    cfg.decoder.bos_token_id, cfg.decoder.eos_token_id, cfg.decoder.pad_token_id = 1, 2, 0
    cfg.ngram_whitelist = (9, 10)
    cfg.validate()
    return cfg
