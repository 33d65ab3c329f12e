"""KV-cached generation vs recomputation, batching, sampling and the n-gram rule."""

from __future__ import annotations

import random

import pytest
import torch

from ocrstream.model.generation import (
    SamplingParams,
    apply_ngram_rule,
    choose_tokens,
    generate,
    ngram_banned_tokens,
)


def prompt(model, n_img: int, rng: random.Random) -> tuple[list[int], torch.Tensor]:
    cfg = model.config
    text = [rng.randrange(3, cfg.decoder.vocab_size - 4) for _ in range(rng.randrange(1, 6))]
    ids = [cfg.decoder.bos_token_id] + [cfg.image_token_id] * n_img + text
    emb = torch.randn(n_img, cfg.decoder.hidden_size)
    return ids, emb


def test_cached_generation_equals_full_recompute(tiny_model, seed):
    rng = random.Random(seed)
    ids, emb = prompt(tiny_model, 7, rng)
    params = SamplingParams(max_new_tokens=12, ngram=None, stop_ids=(10**6,))
    out = generate(tiny_model, [ids], [emb], params, return_scores=True)
    seq = out.sequences[0]
    assert len(seq) == 12 and len(out.scores) == 12
    full = torch.tensor([ids + seq])
    with torch.no_grad():
        # scatter images into the prompt part only (a generated id may equal <image>)
        x = tiny_model.model.embed_tokens(full)
        x[0, 1 : 1 + emb.shape[0]] = emb
        logits = tiny_model(full, inputs_embeds=x).logits[0]
    for step in range(12):
        ref = logits[len(ids) - 1 + step]
        torch.testing.assert_close(out.scores[step][0], ref, atol=1e-4, rtol=1e-4)
        assert int(ref.argmax()) == seq[step]


def test_batch_equals_single_runs(tiny_model, seed):
    rng = random.Random(seed)
    rows = [prompt(tiny_model, n, rng) for n in (3, 9, 0, 5)]
    params = SamplingParams(max_new_tokens=10, ngram=(3, 8), stop_ids=(10**6,))
    batch = generate(tiny_model, [r[0] for r in rows], [r[1] for r in rows], params, return_scores=True)
    for i, (ids, emb) in enumerate(rows):
        single = generate(tiny_model, [ids], [emb], params, return_scores=True)
        assert batch.sequences[i] == single.sequences[0]
        for s_b, s_1 in zip(batch.scores, single.scores, strict=True):
            finite = torch.isfinite(s_1[0])
            assert torch.equal(finite, torch.isfinite(s_b[i]))
            torch.testing.assert_close(s_b[i][finite], s_1[0][finite], atol=1e-4, rtol=1e-4)


def test_stop_token_ends_row(tiny_model, seed):
    rng = random.Random(seed)
    ids, emb = prompt(tiny_model, 2, rng)
    free = generate(tiny_model, [ids], [emb], SamplingParams(max_new_tokens=6, ngram=None, stop_ids=(10**6,)))
    first = free.sequences[0][0]
    out = generate(
        tiny_model, [ids, ids], [emb, emb], SamplingParams(max_new_tokens=6, ngram=None, stop_ids=(first,))
    )
    assert out.sequences == [[], []] and out.stopped == [True, True]
    third = free.sequences[0][2]
    if third not in free.sequences[0][:2]:
        out = generate(
            tiny_model, [ids], [emb], SamplingParams(max_new_tokens=6, ngram=None, stop_ids=(third,))
        )
        assert out.sequences[0] == free.sequences[0][:2] and out.stopped == [True]


def test_sampling_is_seeded_and_top_p_limits_support(seed):
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0, -3.0]])
    g1 = torch.Generator().manual_seed(seed)
    g2 = torch.Generator().manual_seed(seed)
    a = [int(choose_tokens(logits, 1.0, 1.0, g1)) for _ in range(30)]
    b = [int(choose_tokens(logits, 1.0, 1.0, g2)) for _ in range(30)]
    assert a == b
    # top_p 0.5: token 0 alone has p ~ 0.72 > 0.5, so it is the only candidate
    g = torch.Generator().manual_seed(seed)
    assert {int(choose_tokens(logits, 1.0, 0.5, g)) for _ in range(50)} == {0}
    assert int(choose_tokens(logits, 0.0, 1.0, None)) == 0


def naive_banned(tokens, n, window, whitelist):
    banned = set()
    if len(tokens) < n or n == 1:  # the official slicing makes n == 1 a no-op
        return banned
    for start in range(len(tokens) - n + 1):
        if start < len(tokens) - window:
            continue
        gram = tokens[start : start + n]
        if gram[:-1] == tokens[len(tokens) - n + 1 :]:
            banned.add(gram[-1])
    return banned - set(whitelist)


def test_ngram_rule_examples():
    t = [1, 2, 3, 1, 2]
    assert ngram_banned_tokens(t, 3, 100) == {3}
    assert ngram_banned_tokens(t, 3, 4) == set()  # the earlier (1,2,3) starts outside the window
    assert ngram_banned_tokens(t, 3, 5) == {3}
    assert ngram_banned_tokens(t, 3, 100, whitelist=[3]) == set()
    assert ngram_banned_tokens([1, 2], 3, 100) == set()
    assert ngram_banned_tokens([7, 7, 7], 2, 10) == {7}
    assert ngram_banned_tokens([7, 7, 7], 1, 10) == set()  # official quirk: n == 1 bans nothing


def test_ngram_rule_random_against_naive(seed):
    rng = random.Random(seed)
    for _ in range(200):
        toks = [rng.randrange(4) for _ in range(rng.randrange(0, 40))]
        n, window = rng.randrange(1, 6), rng.randrange(6, 30)
        wl = [rng.randrange(4)]
        assert ngram_banned_tokens(toks, n, window, wl) == naive_banned(toks, n, window, wl)
    logits = torch.zeros(2, 6)
    apply_ngram_rule(logits, [[1, 2, 1], [4, 5]], 2, 10, whitelist=[])
    assert torch.isinf(logits[0, 2]) and torch.isfinite(logits[1]).all()


def test_ngram_blocks_repetition_in_generation(tiny_model, seed):
    rng = random.Random(seed)
    ids, emb = prompt(tiny_model, 4, rng)
    out = generate(
        tiny_model, [ids], [emb], SamplingParams(max_new_tokens=40, ngram=(2, 40), stop_ids=(10**6,))
    )
    seq = out.sequences[0]
    bigrams = [tuple(seq[i : i + 2]) for i in range(len(seq) - 1)]
    assert len(bigrams) == len(set(bigrams))


def test_bad_params_raise():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0).validate()
    with pytest.raises(ValueError, match="ngram"):
        SamplingParams(ngram=(5, 3)).validate()


def test_sampled_generation_seeded_and_within_top_p(tiny_model, seed):
    rng = random.Random(seed)
    rows = [prompt(tiny_model, n, rng) for n in (2, 6)]
    params = SamplingParams(max_new_tokens=10, temperature=0.9, top_p=0.8, ngram=None, stop_ids=(10**6,))
    runs = [
        generate(
            tiny_model,
            [r[0] for r in rows],
            [r[1] for r in rows],
            params,
            generator=torch.Generator().manual_seed(seed),
            return_scores=True,
        )
        for _ in range(2)
    ]
    assert runs[0].sequences == runs[1].sequences
    for step, scores in enumerate(runs[0].scores):
        probs = torch.softmax(scores / 0.9, dim=-1)
        for row in range(2):
            if step >= len(runs[0].sequences[row]):
                continue
            tok = runs[0].sequences[row][step]
            # the sampled token lies in the smallest set of top tokens whose mass reaches top_p
            p_sorted, order = probs[row].sort(descending=True)
            keep = order[(p_sorted.cumsum(0) - p_sorted) <= 0.8]
            assert tok in keep.tolist()


def test_position_limit(tiny_model):
    limit = tiny_model.config.decoder.max_position_embeddings
    with pytest.raises(ValueError, match="max_position_embeddings"):
        generate(tiny_model, [[0] + [5] * limit], None, SamplingParams(max_new_tokens=2))
    out = generate(
        tiny_model,
        [[0] + [5] * (limit - 4)],
        None,
        SamplingParams(max_new_tokens=50, ngram=None, stop_ids=(10**6,)),
    )
    assert len(out.sequences[0]) == 3


def ctc_readings(
    cfg, rng: random.Random, n: int, g: torch.Generator, sure: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, CTC log-probs [B, T, V] that read a random label sequence (blank = the pad id),
    sharply on some rows and blurred on others (where the guided choice leaves the reading), and
    the rows' frame counts. The first ``sure`` rows read at least 6 labels so sharply that the
    guided choice follows the reading whatever the decoder prefers."""
    d = cfg.decoder
    special = {d.pad_token_id, d.eos_token_id, d.bos_token_id, cfg.image_token_id}
    labels = [i for i in range(3, d.vocab_size - 4) if i not in special]
    frames = []
    for row in range(n):
        path = []
        for lab in rng.choices(labels, k=rng.randrange(6 if row < sure else 1, 14)):
            gap = rng.randrange(1 if row < sure else 0, 3)  # a blank keeps a repeated label apart
            path += [d.pad_token_id] * gap + [lab] * rng.randrange(1, 3)
        sharp = 60.0 if row < sure else rng.choice((9.0, 9.0, 2.5))
        frames.append((path + [d.pad_token_id] * rng.randrange(1, 3), sharp))
    t = max(len(p) for p, _ in frames)
    logits = torch.randn(n, t, d.vocab_size, generator=g)
    for i, (path, sharp) in enumerate(frames):
        logits[i, torch.arange(len(path)), torch.tensor(path)] += sharp
    return logits.log_softmax(-1), torch.tensor([len(p) for p, _ in frames])


def test_guided_speculation_equals_steps_and_single_rows(tiny_model, seed):
    """CTC-guided decoding, batched with compaction and checking the CTC reading several labels
    per pass, chooses what the plain loop chooses for each row alone, token for token."""
    from ocrstream.model.ctc import CtcPrefixScorer

    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    cfg = tiny_model.config
    blank, eos = cfg.decoder.pad_token_id, cfg.decoder.eos_token_id
    n = 7
    rows = [prompt(tiny_model, rng.randrange(0, 8), rng) for _ in range(n)]
    # row 0 reads surely and has room to: the guesses must save passes there whatever the draw
    log_probs, lengths = ctc_readings(cfg, rng, n, g, sure=1)
    caps = [25] + [rng.choice((0, 2, 25, 25)) for _ in range(n - 1)]
    params = SamplingParams(max_new_tokens=max(caps), ngram=None, stop_ids=(eos,))
    passes = []
    forward = tiny_model.forward

    def run(idx: list[int], draft: int):
        calls = [0]

        def counted(*a, **k):
            calls[0] += 1
            return forward(*a, **k)

        tiny_model.forward = counted
        try:
            out = generate(
                tiny_model,
                [rows[i][0] for i in idx],
                [rows[i][1] for i in idx],
                params,
                ctc=CtcPrefixScorer(log_probs[idx], blank, lengths[idx]),
                max_new=[caps[i] for i in idx],
                draft=draft,
            )
        finally:
            del tiny_model.forward
        passes.append(calls[0])
        return out.sequences, out.stopped

    alone = [run([i], 0) for i in range(n)]
    want = ([s[0][0] for s in alone], [s[1][0] for s in alone])
    assert [run([i], 8) for i in range(n)] == alone
    assert passes[n] < passes[0]  # row 0's reading was checked several labels a pass
    assert all(b <= a for a, b in zip(passes[:n], passes[n:], strict=True))  # and never cost a pass
    assert run(list(range(n)), 0) == want
    for draft in (1, 3, 8):
        assert run(list(range(n)), draft) == want, draft
