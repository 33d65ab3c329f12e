"""Line-reader training batches and the joint CTC + autoregressive objective.

A row is one line strip. Its decoder sequence is the runtime's "free_ocr" prompt with the
strip's vision tokens: ``[BOS] <image>*(n+2) "\\nFree OCR." | text + EOS`` (n tokens, the row's
newline, the view separator). The CTC head reads the n vision tokens directly (blank = pad id).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from ocrstream.data.lines import LineSample
from ocrstream.model.deepseek_ocr import IGNORE_INDEX, DeepseekOCRForCausalLM
from ocrstream.model.lines import strips_to_tensor
from ocrstream.model.tokenizer import PROMPTS
from ocrstream.train.tokenizer import SPECIAL_TOKENS

FREE_OCR_PROMPT = PROMPTS["free_ocr"].split("<image>", 1)[1]  # "\nFree OCR."


@dataclass
class LineBatch:
    pixels: torch.Tensor  # [B, 3, H, W] in [-1, 1], every row padded to W with its background
    targets: list[list[int]]  # character ids per row (no EOS)
    texts: list[str]
    squeezes: list[float]

    @property
    def size(self) -> int:
        return self.pixels.shape[0]


def make_batch(
    samples: Sequence[LineSample], tok: Tokenizer, width_multiple: int, max_width: int
) -> LineBatch:
    w = max(s.strip.width for s in samples)
    w = min(max_width, -(-w // width_multiple) * width_multiple)
    return LineBatch(
        pixels=strips_to_tensor([s.strip for s in samples], w),
        targets=[tok.encode(s.text, add_special_tokens=False).ids for s in samples],
        texts=[s.text for s in samples],
        squeezes=[s.squeeze for s in samples],
    )


def decoder_rows(
    tok: Tokenizer, n_tokens: int, targets: Sequence[Sequence[int]], special: dict[str, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, labels, mask) [B, T]: prompt with n + 2 placeholders, then text + EOS,
    right-padded (labels -100 there and over the prompt)."""
    prompt = (
        [special["bos_token_id"]]
        + [special["image_token_id"]] * (n_tokens + 2)
        + tok.encode(FREE_OCR_PROMPT, add_special_tokens=False).ids
    )
    rows = [prompt + list(t) + [special["eos_token_id"]] for t in targets]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), special["pad_token_id"], dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, len(prompt) : len(r)] = torch.tensor(r[len(prompt) :])
        mask[i, : len(r)] = True
    return ids, labels, mask


def corrupt(
    ids: torch.Tensor, labels: torch.Tensor, rate: float, lo: int, hi: int, rng: random.Random
) -> torch.Tensor:
    """Replace a share of the text inputs (where labels are set) with random characters in
    [lo, hi): the decoder cannot lean on the text so far and must keep reading the image."""
    if rate <= 0:
        return ids
    g = torch.Generator().manual_seed(rng.getrandbits(31))
    mask = (torch.rand(ids.shape, generator=g) < rate) & (labels != IGNORE_INDEX)
    return torch.where(mask, torch.randint(lo, hi, ids.shape, generator=g), ids)


@dataclass
class LineLoss:
    total: torch.Tensor
    ctc: torch.Tensor
    ar: torch.Tensor
    aux: torch.Tensor
    ar_acc: float


def compute_loss(
    model: DeepseekOCRForCausalLM,
    batch: LineBatch,
    tok: Tokenizer,
    special: dict[str, int],
    ctc_weight: float = 1.0,
    corrupt_rate: float = 0.1,
    rng: random.Random | None = None,
    ar_rows: int | None = None,
) -> LineLoss:
    """CTC on every row; the autoregressive loss on the first ``ar_rows`` rows (default all): the
    decoder pass costs as much as the encoder's, and the CTC-trained tokens carry most of the
    reading, so the decoder can learn from part of each batch."""
    feats = model.encode_strips(batch.pixels)
    tokens = feats.projected  # [B, n, D]
    b, n, _ = tokens.shape
    logp = model.ctc_logits(tokens).log_softmax(-1)  # [B, n, V]
    tgt_len = torch.tensor([len(t) for t in batch.targets])
    ctc = F.ctc_loss(
        logp.transpose(0, 1),  # [n, B, V]
        torch.tensor([i for t in batch.targets for i in t], dtype=torch.long),
        input_lengths=torch.full((b,), n, dtype=torch.long),
        target_lengths=tgt_len,
        blank=special["pad_token_id"],
        zero_infinity=True,  # a squeezed rung may hold more characters than tokens
    )
    k = b if ar_rows is None else max(1, min(b, ar_rows))
    ids, labels, mask = decoder_rows(tok, n, batch.targets[:k], special)
    first_char = len(SPECIAL_TOKENS)
    inputs = corrupt(ids, labels, corrupt_rate, first_char, tok.get_vocab_size() - 1, rng or random.Random(0))
    embeds = [model.layout_strip(tokens[i]) for i in range(k)]
    out = model(inputs, image_embeds=embeds, attention_mask=mask, labels=labels)
    aux = out.aux_loss if out.aux_loss is not None else torch.zeros(())
    with torch.no_grad():
        pred = out.logits[:, :-1].argmax(-1)
        tgt = labels[:, 1:]
        ok = tgt != IGNORE_INDEX
        acc = float((pred[ok] == tgt[ok]).float().mean()) if ok.any() else 0.0
    total = ctc_weight * ctc + out.lm_loss + aux
    return LineLoss(total, ctc, out.lm_loss, aux, acc)
