"""Reading the line reader: greedy CTC, autoregressive and CTC-guided decoding, CER.

Used by the trainer's periodic evaluation, by ``ocrstream eval`` and by the model card. CER is the
summed edit distance over the summed reference length, both after ``charset.normalize``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer

from ocrstream.data.charset import normalize
from ocrstream.model.ctc import ctc_greedy
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.generation import SamplingParams, generate
from ocrstream.textdist import levenshtein
from ocrstream.train.line_batches import FREE_OCR_PROMPT, LineBatch


def cer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    errs = sum(levenshtein(normalize(h), normalize(r)) for h, r in zip(hyps, refs, strict=True))
    return errs / max(1, sum(len(normalize(r)) for r in refs))


@torch.no_grad()
def read_batch(
    model: DeepseekOCRForCausalLM, batch: LineBatch, tok: Tokenizer, special: dict[str, int], ar: bool = True
) -> dict[str, list[str]]:
    """Texts of a batch by greedy CTC and (``ar``) by greedy autoregressive decoding."""
    model.eval()
    tokens = model.encode_strips(batch.pixels).projected  # [B, n, D]
    out = {"ctc": [tok.decode(ids) for ids in ctc_greedy(model.ctc_logits(tokens), special["pad_token_id"])]}
    if ar:
        n = tokens.shape[1]
        prompt = (
            [special["bos_token_id"]]
            + [special["image_token_id"]] * (n + 2)
            + tok.encode(FREE_OCR_PROMPT, add_special_tokens=False).ids
        )
        embeds = [[model.layout_strip(tokens[i])] for i in range(tokens.shape[0])]
        longest = max(len(t) for t in batch.targets)
        params = SamplingParams(max_new_tokens=longest + 16, ngram=None, stop_ids=(special["eos_token_id"],))
        gen = generate(model, [prompt] * tokens.shape[0], embeds, params)
        out["ar"] = [tok.decode(s) for s in gen.sequences]
    return out


def evaluate_batches(
    model: DeepseekOCRForCausalLM,
    batches: Sequence[LineBatch],
    tok: Tokenizer,
    special: dict[str, int],
    ar: bool = True,
) -> dict[str, float]:
    hyps: dict[str, list[str]] = {}
    refs: list[str] = []
    for b in batches:
        for k, v in read_batch(model, b, tok, special, ar).items():
            hyps.setdefault(k, []).extend(v)
        refs.extend(b.texts)
    return {f"cer_{k}": cer(v, refs) for k, v in hyps.items()}
