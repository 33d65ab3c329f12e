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


def _scores(scorer, v: int) -> list[torch.Tensor]:
    """Everything a guided step reads of a scorer (or lookahead): every label's prefix score, the
    end score and the reading's labels around the prefix."""
    every = torch.arange(v).expand(len(scorer.pre.length), -1)
    return [scorer.next_scores(every), scorer.end_scores(), scorer.path_labels()]


def _alone(lp, lengths, i: int, prefix: list[int]) -> list[torch.Tensor]:
    one = CtcPrefixScorer(lp[i : i + 1], 0, lengths[i : i + 1])
    for c in prefix:
        one.advance([c])
    return _scores(one, lp.shape[2])


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    # bit for bit (nan where a prefix cannot be read at all, on both sides)
    return all(torch.equal(x.nan_to_num(nan=7.0), y.nan_to_num(nan=7.0)) for x, y in zip(a, b, strict=True))


def test_lookahead_commit_and_keep_equal_one_row_one_label_at_a_time():
    """The speculative decoder's scorer calls (every prefix along guessed labels at once, jump to
    the accepted one, drop finished rows) give bit for bit what a one-row scorer advanced label
    by label gives."""
    rng = random.Random()
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    b, t, v = 5, 24, 6
    lp = (3 * torch.randn(b, t, v, generator=g)).log_softmax(-1)
    lengths = torch.tensor([rng.randrange(1, t + 1) for _ in range(b)])
    scorer = CtcPrefixScorer(lp, 0, lengths)
    prefixes: list[list[int]] = [[] for _ in range(b)]
    for _ in range(3):
        guesses = [[rng.randrange(1, v) for _ in range(rng.randrange(0, 4))] for _ in range(b)]
        look = scorer.lookahead(guesses)
        got = _scores(look, v)
        for i, guess in enumerate(guesses):
            for k in range(len(guess) + 1):
                entry = look.start[i] + k
                want = _alone(lp, lengths, i, prefixes[i] + guess[:k])
                assert _same([x[entry : entry + 1] for x in got], want), (i, k)
        at = [rng.randrange(0, len(guess) + 1) for guess in guesses]
        chosen = [rng.choice((None, rng.randrange(1, v), rng.randrange(1, v))) for _ in range(b)]
        scorer.commit(look, at, chosen)
        for i in range(b):
            if chosen[i] is not None:
                prefixes[i] += guesses[i][: at[i]] + [chosen[i]]
        got = _scores(scorer, v)
        for i in range(b):
            assert _same([x[i : i + 1] for x in got], _alone(lp, lengths, i, prefixes[i])), i
    # rows 0 and 3 are done: row 4 moves into row 0's place
    scorer.keep([0], [4], 3)
    got = _scores(scorer, v)
    for j, i in enumerate((4, 1, 2)):
        assert _same([x[j : j + 1] for x in got], _alone(lp, lengths, i, prefixes[i])), i
