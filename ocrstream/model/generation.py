"""Batched greedy / sampled generation with a KV cache and the windowed no-repeat n-gram rule.

Follows the official ``DeepSeek-OCR-vllm/process/ngram_norepeat.py`` (``NoRepeatNGramLogitsProcessor``:
over the generated ids only, ban every token that would complete an n-gram already seen within
the last ``window`` ids, except whitelisted ids such as ``<td>``/``</td>``) and the decoding
settings of ``run_dpsk_ocr_image.py`` (temperature 0, stop on EOS). Rows are left-padded and get
per-row positions, so a batch of N gives the same tokens as N single runs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .ctc import CtcLookahead, CtcPrefixScorer
from .deepseek_ocr import DeepseekOCRForCausalLM
from .moe_decoder import KVCache

log = logging.getLogger(__name__)

# Official (ngram, window) settings per script.
NGRAM_IMAGE = (30, 90)  # run_dpsk_ocr_image.py and the vLLM README recipe
NGRAM_PDF = (20, 50)  # run_dpsk_ocr_pdf.py
NGRAM_EVAL = (40, 90)  # run_dpsk_ocr_eval_batch.py


@dataclass
class SamplingParams:
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 -> greedy
    top_p: float = 1.0
    ngram: tuple[int, int] | None = NGRAM_IMAGE  # (n, window); None disables the rule
    ngram_whitelist: tuple[int, ...] = ()
    stop_ids: tuple[int, ...] = ()  # empty -> the config's eos id

    def validate(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.ngram is not None and (self.ngram[0] < 1 or self.ngram[1] < self.ngram[0]):
            raise ValueError(f"ngram (n, window) needs 1 <= n <= window, got {self.ngram}")


@dataclass
class GenerationOutput:
    sequences: list[list[int]]  # generated ids per row, stop token excluded
    stopped: list[bool]  # True when the row ended on a stop id
    # per step [B, V] processed logits (optional); -inf for rows already finished (greedy)
    scores: list[torch.Tensor] = field(default_factory=list)


def ngram_banned_tokens(
    tokens: Sequence[int], n: int, window: int, whitelist: Sequence[int] = ()
) -> set[int]:
    """Ids that would repeat an n-gram seen within the last ``window`` generated ids."""
    length = len(tokens)
    if length < n:
        return set()
    # Official slicing: tokens[-(n-1):]; for n == 1 that is the whole list, which no (n-1)-gram
    # equals, so n == 1 bans nothing (kept for parity).
    prefix = list(tokens[-(n - 1) :])
    banned = set()
    for i in range(max(0, length - window), length - n + 1):
        if list(tokens[i : i + n - 1]) == prefix:
            banned.add(tokens[i + n - 1])
    return banned - set(whitelist)


def apply_ngram_rule(
    logits: torch.Tensor,
    generated: Sequence[Sequence[int]],
    n: int,
    window: int,
    whitelist: Sequence[int] = (),
) -> torch.Tensor:
    """Set banned logits to -inf in place; logits [B, V], one generated-id list per row."""
    for row, toks in enumerate(generated):
        banned = ngram_banned_tokens(toks, n, window, whitelist)
        if banned:
            logits[row, list(banned)] = float("-inf")
    return logits


def choose_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """logits [B, V] fp32 -> next ids [B]."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(dim=-1) - sorted_p > top_p  # keep the smallest set reaching top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged id lists -> (ids [B, L], mask [B, L]) left-padded."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError(f"every row needs at least one token, got lengths {[len(r) for r in rows]}")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, width - len(r) :] = True
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(
    model: DeepseekOCRForCausalLM,
    input_ids: Sequence[Sequence[int]],
    image_embeds: Sequence[Sequence[torch.Tensor] | torch.Tensor | None] | None = None,
    params: SamplingParams | None = None,
    generator: torch.Generator | None = None,
    return_scores: bool = False,
    on_step: Callable[[int, list[int]], None] | None = None,
    ctc: CtcPrefixScorer | None = None,
    ctc_weight: float = 0.5,
    max_new: Sequence[int] | None = None,
    draft: int = 0,
) -> GenerationOutput:
    """Generate for a batch of prompts.

    input_ids: one id list per row (with `<image>` placeholders); image_embeds: per row, the
    embeddings for that row's placeholders (a tensor or list of per-image tensors) or None.
    ``ctc`` (CTC-guided decoding, greedy only): each step scores (1 - ctc_weight) * log p_decoder
    + ctc_weight * the CTC prefix score of every extension, and the stop token by the CTC score
    of ending there. ``max_new``: a per-row cap below ``params.max_new_tokens``. ``on_step(step,
    ids)``: each row's id this step (the pad id for rows finished earlier, greedy).
    ``draft`` > 0 (CTC-guided decoding without the n-gram rule, scores or ``on_step``): check up
    to that many labels of the CTC reading per decoder pass (``_speculate``), the same tokens in
    fewer passes.
    """
    p = params or SamplingParams()
    p.validate()
    if ctc is not None and p.temperature != 0:
        raise ValueError("CTC-guided decoding is greedy only (temperature 0)")
    cfg = model.config
    stop = set(p.stop_ids or (cfg.decoder.eos_token_id,))
    if cfg.decoder.pad_token_id == cfg.image_token_id:
        raise ValueError(f"pad id {cfg.decoder.pad_token_id} equals the image token id")
    dev = model.device
    ids, mask = left_pad(input_ids, cfg.decoder.pad_token_id, dev)
    limit = cfg.decoder.max_position_embeddings
    longest = int(mask.sum(dim=1).max())
    if longest >= limit:
        raise ValueError(f"prompt of {longest} tokens leaves no room under max_position_embeddings {limit}")
    if longest + p.max_new_tokens > limit:
        log.info(
            "max_new_tokens %d cut to %d by max_position_embeddings %d",
            p.max_new_tokens,
            limit - longest,
            limit,
        )
        p = dataclasses.replace(p, max_new_tokens=limit - longest)
    flat: list[torch.Tensor] = []
    for row in image_embeds or []:
        if row is None:
            continue
        flat.extend([row] if isinstance(row, torch.Tensor) else list(row))
    b = ids.shape[0]
    cache = KVCache(cfg.decoder.num_hidden_layers, reserve=p.max_new_tokens)
    out = model(ids, image_embeds=flat or None, attention_mask=mask, cache=cache, last_only=True)
    logits = out.logits[:, -1].float()
    caps = list(max_new) if max_new is not None else [p.max_new_tokens] * b
    if ctc is not None and draft > 0 and p.ngram is None and not return_scores and on_step is None:
        caps = [min(c, p.max_new_tokens) for c in caps]
        return _speculate(model, cache, logits, caps, ctc, ctc_weight, sorted(stop), draft)
    generated: list[list[int]] = [[] for _ in range(b)]
    stopped = [False] * b
    scores: list[torch.Tensor] = []
    # The batch shrinks as rows finish (greedy only: a sampled step draws one number per row, so
    # dropping rows would change the draws of the others). rows[j]: the input row batch row j
    # decodes; done[j]: finished, fed padding until the next compaction drops it.
    compact = p.temperature == 0
    rows = list(range(b))
    done = [False] * b
    stop_ids = sorted(stop)
    for step in range(p.max_new_tokens):
        for j, i in enumerate(rows):  # a row at its own cap ends there (not stopped: the budget ran out)
            if not done[j] and step >= caps[i]:
                done[j] = True
        if all(done):
            break
        if compact and any(done):
            dst, src, n = _compact(done, cache, ctc, rows)
            logits[dst] = logits[src]
            logits = logits[:n]
            done = [False] * n
        if ctc is not None:
            logits = _guided(logits, ctc, ctc_weight, stop_ids)
        if p.ngram is not None:
            apply_ngram_rule(logits, [generated[i] for i in rows], p.ngram[0], p.ngram[1], p.ngram_whitelist)
        if return_scores:
            full = logits.new_full((b, logits.shape[1]), float("-inf"))
            full[rows] = logits
            scores.append(full)
        nxt = choose_tokens(logits, p.temperature, p.top_p, generator).tolist()
        chosen: list[int | None] = [None] * len(rows)
        for j, tok in enumerate(nxt):
            if done[j]:
                continue
            if tok in stop:
                done[j] = stopped[rows[j]] = True
            else:
                generated[rows[j]].append(tok)
                chosen[j] = tok
        if ctc is not None:
            ctc.advance(chosen)
        if on_step is not None:
            picked = [cfg.decoder.pad_token_id] * b
            for i, tok in zip(rows, nxt, strict=True):
                picked[i] = tok
            on_step(step, picked)
        if all(done) or step == p.max_new_tokens - 1:
            break
        feed = torch.tensor(
            [[cfg.decoder.pad_token_id if d else tok] for d, tok in zip(done, nxt, strict=True)],
            dtype=torch.long,
            device=dev,
        )
        active = torch.tensor([[not d] for d in done], dtype=torch.bool, device=dev)
        # Embed directly: a generated id equal to <image> is a plain token here, not a placeholder.
        emb = model.model.embed_tokens(feed)
        out = model(feed, inputs_embeds=emb, attention_mask=active, cache=cache, last_only=True)
        logits = out.logits[:, -1].float()
    return GenerationOutput(sequences=generated, stopped=stopped, scores=scores)


def _speculate(
    model: DeepseekOCRForCausalLM,
    cache: KVCache,
    logits: torch.Tensor,
    caps: list[int],
    ctc: CtcPrefixScorer,
    weight: float,
    stop: list[int],
    draft: int,
) -> GenerationOutput:
    """CTC-guided greedy decoding after the prompt (``cache``, next-token ``logits`` [B, V]),
    checking the CTC reading ``draft`` labels at a time (speculative decoding, CTC the drafter).

    A pass feeds each row its pending token and the next labels of its CTC reading; the logits at
    each fed position give the guided choice after it, and a row goes on choosing along the pass
    while its choice is the label fed next. So a pass yields 1 to draft + 1 tokens per row, the
    tokens one step at a time would choose (up to float rounding: a pass multiplies more rows at
    once); a row's positions past its first disagreement are masked out of the cache.
    """
    pad = model.config.decoder.pad_token_id
    dev = model.device
    b = logits.shape[0]
    generated: list[list[int]] = [[] for _ in range(b)]
    stopped = [False] * b
    rows = list(range(b))  # rows[j]: the input row batch row j decodes
    done = [cap <= 0 for cap in caps]
    pending = [pad] * b  # each row's last choice, not yet fed
    # labels to guess per row: a row whose guesses fail (the CTC reading and the guided choice
    # part ways: a squeezed strip, random characters) guesses fewer, so that its passes cost
    # little more than plain steps; one that keeps agreeing guesses more again
    ahead = [draft] * b
    # the first token: a plain guided step on the prompt's logits
    first = _guided(logits, ctc, weight, stop).argmax(-1).tolist()
    chosen: list[int | None] = [None] * b
    for i, tok in enumerate(first):
        if done[i]:
            continue
        if tok in stop:
            done[i] = stopped[i] = True
            continue
        generated[i].append(tok)
        done[i] = len(generated[i]) >= caps[i]
        pending[i] = tok
        chosen[i] = None if done[i] else tok
    ctc.advance(chosen)
    while not all(done):
        n = _compact(done, cache, ctc, rows, pending, ahead)[2]
        # each row's guess, as long as its cap leaves room to choose after it
        guesses = [
            g[: min(k, caps[i] - len(generated[i]) - 1)]
            for g, k, i in zip(ctc.draft(draft), ahead, rows, strict=True)
        ]
        if sum(map(len, guesses)) < n:  # too few guesses to pay for a wider pass: a plain step
            guesses = [[] for _ in guesses]
        width = 1 + max(len(g) for g in guesses)
        fed = [[tok, *g] + [pad] * (width - 1 - len(g)) for tok, g in zip(pending, guesses, strict=True)]
        feed = torch.tensor(fed, dtype=torch.long, device=dev)
        valid = torch.tensor([[k <= len(g) for k in range(width)] for g in guesses], device=dev)
        # embed directly: a generated id equal to <image> is a plain token here, not a placeholder
        out = model(feed, inputs_embeds=model.model.embed_tokens(feed), attention_mask=valid, cache=cache)
        look = ctc.lookahead(guesses)  # the prefix at each fed position, row after row
        best = _guided(out.logits[valid].float(), look, weight, stop).argmax(-1).tolist()
        choice = [best[s : s + len(g) + 1] for s, g in zip(look.start, guesses, strict=True)]
        at = [0] * n  # the position each row's accepted tokens end at
        done = [False] * n
        chosen = [None] * n
        for j, i in enumerate(rows):
            k = 0
            while True:
                tok = choice[j][k]
                if tok in stop:
                    done[j] = stopped[i] = True
                    break
                generated[i].append(tok)
                if len(generated[i]) >= caps[i]:
                    done[j] = True
                    break
                if k < len(guesses[j]) and tok == guesses[j][k]:
                    k += 1  # the token fed next: its logits are the next position's
                    continue
                chosen[j] = pending[j] = tok
                break
            at[j] = k
            if guesses[j]:  # (a row without a guess this pass has not failed one)
                ahead[j] = min(draft, 2 * k + 1)
        cache.valid[:, -width:] &= (
            torch.arange(width, device=dev)[None, :] <= torch.tensor(at, device=dev)[:, None]
        )
        ctc.commit(look, at, chosen)
    return GenerationOutput(sequences=generated, stopped=stopped)


def compact_rows(done: Sequence[bool]) -> tuple[list[int], list[int], int]:
    """(dst, src, n) that compact a batch to its n running rows: moving rows ``src`` (running, at
    n or past it) into rows ``dst`` (done, below n) leaves the running rows in 0..n-1. Only the
    few moved rows are copied, not every survivor."""
    n = len(done) - sum(done)
    dst = [j for j in range(n) if done[j]]
    src = [j for j in range(n, len(done)) if not done[j]]
    return dst, src, n


def _compact(
    done: Sequence[bool], cache: KVCache, ctc: CtcPrefixScorer | None, *per_row: list
) -> tuple[list[int], list[int], int]:
    """Drop the finished rows (``compact_rows``) from the cache, the CTC scorer and each list of
    per-row state, in place; returns (dst, src, n) for the caller's other per-row tensors."""
    dst, src, n = compact_rows(done)
    cache.keep(dst, src, n)
    if ctc is not None:
        ctc.keep(dst, src, n)
    for xs in per_row:
        for a, c in zip(dst, src, strict=True):
            xs[a] = xs[c]
        del xs[n:]
    return dst, src, n


GUIDE_TOP_K = 8  # decoder candidates rescored by CTC per step (ESPnet's partial scoring)


def _guided(
    logits: torch.Tensor, ctc: CtcPrefixScorer | CtcLookahead, weight: float, stop: list[int]
) -> torch.Tensor:
    """Decoder logits [B, V] -> joint CTC/attention scores [B, V] (see ``generate``): the decoder's
    top-k candidates get (1 - w) log p_dec + w CTC prefix score, the stop tokens the CTC score of
    ending here, everything else -inf."""
    att = torch.log_softmax(logits, dim=-1)
    top = att.topk(min(GUIDE_TOP_K, att.shape[1]), dim=-1).indices  # [B, K]
    # plus the CTC best path's labels at and beside the prefix's position: the CTC reading stays
    # a candidate while the prefix follows it
    top = torch.cat([top, ctc.path_labels().to(top.device)], dim=1)
    pre = ctc.next_scores(top).to(att.device)
    out = torch.full_like(att, float("-inf"))
    out.scatter_(1, top, (1 - weight) * att.gather(1, top) + weight * pre)
    end = ctc.end_scores().to(att.device)
    for s in stop:  # the stop token: the CTC probability that the transcript ends here
        out[:, s] = (1 - weight) * att[:, s] + weight * end
    return out
