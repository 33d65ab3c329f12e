"""A tiny random-weight OcrModel (fast on one CPU thread) and its character-level tokenizer."""

from __future__ import annotations

SPECIALS = ["<unk>", "<bos>", "<eos>", "<pad>", "<|grounding|>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>"]


def tiny_tokenizer(vocab_size: int = 96, specials: list[str] = SPECIALS):
    """Character-level tokenizer with the role tokens (``specials``) first, then as many printable
    characters as fit; ``<image>`` is the last id (the config's)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = [chr(c) for c in range(32, 127)]
    vocab: dict[str, int] = {}
    for t in [*specials, "\n", *chars]:
        if len(vocab) < vocab_size - 1:
            vocab.setdefault(t, len(vocab))
    vocab["<image>"] = vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"<\|?/?[a-z]+\|?>|."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(["<bos>", "<eos>", "<pad>", "<image>"])
    return tok


def tiny_ocr_model(seed: int | None = None, config: str = "tiny", specials: list[str] = SPECIALS):
    """A random-weight OcrModel; ``config`` tiny (tests) or embedded (the shipped model's size)."""
    import torch

    from ocrstream.model.config import embedded_config, tiny_test_config
    from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
    from ocrstream.model.runtime import OcrModel
    from ocrstream.model.tokenizer import OcrTokenizer

    torch.set_num_threads(1)
    if seed is not None:
        torch.manual_seed(seed)
    cfg = tiny_test_config() if config == "tiny" else embedded_config(vocab_size=96)
    tok = OcrTokenizer(tiny_tokenizer(cfg.decoder.vocab_size, specials), image_token_id=cfg.image_token_id)
    cfg.decoder.bos_token_id = tok.role_id("bos")
    cfg.decoder.eos_token_id = tok.role_id("eos")
    return OcrModel(DeepseekOCRForCausalLM(cfg).eval(), tok)
