"""Tiny random-weight models for the serving tests: saved as snapshots, plus prompts with images."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def fresh_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def tiny_model(seed: int):
    """The tiny test config with logits far from uniform (greedy ties would make parity flaky)."""
    from ocrstream.model.config import tiny_test_config
    from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_test_config()
    cfg.decoder.num_hidden_layers = 3  # layer 0 dense, 1-2 MoE
    cfg.decoder.n_routed_experts = 8
    model = DeepseekOCRForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(std=0.5)
        model.model.embed_tokens.weight.normal_(std=1.0)
        for layer in model.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:
                gate.weight.normal_(std=0.5)  # sharper routing: a real spread of expert loads
    return model


def save_tiny_snapshot(folder: Path, seed: int, stops: bool = True):
    """The tiny model saved with the model helper's save function, plus a matching tokenizer.

    ``stops=False``: the end-of-text rows of the LM head are zero, so a greedy decoder writes up to
    its cap (a random model picks end-of-text first on about one seed in thirty, and a test that
    compares two backends' texts would then compare empty pages)."""
    from ocrstream.model.weights import save_snapshot
    from tests.tiny import tiny_tokenizer

    model = tiny_model(seed)
    tok = tiny_tokenizer(model.config.decoder.vocab_size)
    if not stops:
        # logit 0 against 90-odd random ones of either sign: never the greedy choice in practice
        with torch.no_grad():
            for eos in {model.config.decoder.eos_token_id, tok.token_to_id("<eos>")}:
                model.lm_head.weight[eos] = 0.0
    save_snapshot(model, folder)
    tok.save(str(folder / "tokenizer.json"))
    return model


def random_prompts(model, n: int, gen: torch.Generator) -> tuple[list[list[int]], list[torch.Tensor]]:
    """n prompts of different lengths, each with an image block of random embeddings."""
    cfg = model.config
    d = cfg.decoder
    rows, embeds = [], []
    for _ in range(n):
        n_img = int(torch.randint(3, 12, (1,), generator=gen))
        n_txt = int(torch.randint(1, 6, (1,), generator=gen))
        text = torch.randint(4, d.vocab_size - 4, (n_txt,), generator=gen).tolist()
        rows.append([d.bos_token_id] + [cfg.image_token_id] * n_img + text)
        embeds.append(torch.randn(n_img, d.hidden_size, generator=gen))
    return rows, embeds
