"""CTC decoding: greedy best path and the prefix scorer against brute-force path sums."""

from __future__ import annotations

import itertools
import math
import random

import torch

from ocrstream.model.ctc import CtcPrefixScorer, ctc_greedy


def _collapse(path, blank):
    out, prev = [], blank
    for p in path:
        if p != prev and p != blank:
            out.append(p)
        prev = p
    return tuple(out)


def _brute(log_probs: torch.Tensor, blank: int) -> dict[tuple, float]:
    """log P(labels) for every label sequence, by summing all T^V paths (tiny T and V only)."""
    t, v = log_probs.shape
    acc: dict[tuple, list[float]] = {}
    for path in itertools.product(range(v), repeat=t):
        lp = sum(float(log_probs[i, p]) for i, p in enumerate(path))
        acc.setdefault(_collapse(path, blank), []).append(lp)
    return {k: float(torch.logsumexp(torch.tensor(vals), 0)) for k, vals in acc.items()}


def _prefix_prob(full: dict[tuple, float], prefix: tuple) -> float:
    vals = [p for k, p in full.items() if k[: len(prefix)] == prefix]
    return float(torch.logsumexp(torch.tensor(vals), 0)) if vals else -math.inf


def test_greedy_merges_repeats_and_drops_blanks():
    blank = 0
    # path 1 1 0 1 2 2 0 -> labels 1 1 2; a row's length cuts its tail
    logits = torch.full((2, 7, 3), -5.0)
    for i, p in enumerate([1, 1, 0, 1, 2, 2, 0]):
        logits[0, i, p] = 5.0
        logits[1, i, p] = 5.0
    assert ctc_greedy(logits, blank) == [[1, 1, 2], [1, 1, 2]]
    assert ctc_greedy(logits, blank, [7, 3]) == [[1, 1, 2], [1]]


def test_prefix_scores_equal_brute_force_path_sums():
    g = torch.Generator().manual_seed(random.randrange(1 << 30))
    t, v, blank = 5, 3, 0
    log_probs = torch.randn(1, t, v, generator=g).log_softmax(-1)
    full = _brute(log_probs[0], blank)
    scorer = CtcPrefixScorer(log_probs, blank)
    prefix: tuple = ()
    for _ in range(3):
        nxt = scorer.next_scores()[0].double()
        base = _prefix_prob(full, prefix)
        for c in range(1, v):
            want = _prefix_prob(full, (*prefix, c)) - base
            assert abs(float(nxt[c]) - want) < 1e-4, (prefix, c)
        # ending here: P(labels == prefix) / P(prefix ...)
        end = float(scorer.end_scores()[0])
        assert abs(end - (full.get(prefix, -math.inf) - base)) < 1e-4
        c = int(torch.multinomial(nxt[1:].exp().float(), 1)) + 1
        prefix = (*prefix, c)
        scorer.advance([c])
        if _prefix_prob(full, prefix) == -math.inf:
            break


def test_prefix_scorer_rows_are_independent_and_respect_lengths():
    g = torch.Generator().manual_seed(random.randrange(1 << 30))
    lp = torch.randn(2, 6, 4, generator=g).log_softmax(-1)
    both = CtcPrefixScorer(lp, 0, torch.tensor([6, 4]))
    alone = CtcPrefixScorer(lp[1:, :4], 0)
    assert torch.allclose(both.next_scores()[1], alone.next_scores()[0], atol=1e-5)
    both.advance([None, 2])
    alone.advance([2])
    assert torch.allclose(both.next_scores()[1], alone.next_scores()[0], atol=1e-5)
    assert torch.allclose(both.end_scores()[1], alone.end_scores()[0], atol=1e-5)
