"""CTC decoding for the line reader's CTC head: greedy best path and prefix scores.

``ctc_greedy`` takes the most likely label per vision token, merges repeats and drops blanks.
``CtcPrefixScorer`` gives, for a batch of partial transcripts, log P_ctc(prefix + c, anything
after) for every next character c at once (Watanabe et al., "Hybrid CTC/Attention", 2017): the
autoregressive decoder's next-token scores are mixed with it in CTC-guided decoding, so a
decoder that drifts away from what the image shows is pulled back to it.

The per-frame recursion  r_t(h+c) = (r_{t-1}(h+c) + phi_{t-1}) * y_t(c)  is a linear
recurrence, solved here for all t at once with a cumulative log-sum-exp instead of a Python loop
over frames.
"""

from __future__ import annotations

import torch

# log-probability floor: e^-30 is zero for every purpose here, and it keeps the running sums of
# the cumulative solution small enough for float32 (at most 30 per frame)
LOG_FLOOR = -30.0


def ctc_greedy(logits: torch.Tensor, blank: int, lengths: list[int] | None = None) -> list[list[int]]:
    """logits [B, T, V] -> label ids per row (repeats merged, blanks dropped)."""
    best = logits.argmax(-1).tolist()  # [B][T]
    out = []
    for i, path in enumerate(best):
        if lengths is not None:
            path = path[: lengths[i]]
        ids, prev = [], blank
        for p in path:
            if p != prev and p != blank:
                ids.append(p)
            prev = p
        out.append(ids)
    return out


def ctc_confidence(logits: torch.Tensor, lengths: list[int] | None = None) -> list[float]:
    """Per row, the least confident frame of the greedy path: min over frames of the top label's
    probability. A frame torn between a character and blank (or two characters) pulls it down."""
    top = logits.float().softmax(-1).amax(-1)  # [B, T]
    out = []
    for i in range(top.shape[0]):
        t = top[i, : lengths[i]] if lengths is not None else top[i]
        out.append(float(t.min()) if t.numel() else 1.0)
    return out


def _log_cumsum_linear(log_y: torch.Tensor, log_u: torch.Tensor) -> torch.Tensor:
    """Solve r_t = (r_{t-1} + u_t) * y_t (r_{-1} = 0) in log space for all t: [..., T] -> [..., T].

    r_t = sum_{s<=t} u_s * prod_{k=s..t} y_k = exp(C_t) * sum_{s<=t} u_s / exp(C_{s-1}),
    with C the cumulative sum of log y.
    """
    c = log_y.cumsum(-1)
    c_prev = torch.cat([torch.zeros_like(c[..., :1]), c[..., :-1]], dim=-1)
    return c + torch.logcumsumexp(log_u - c_prev, dim=-1)


class CtcPrefixScorer:
    """CTC prefix scores for B rows of per-frame log-probabilities [B, T, V] (float32 math)."""

    def __init__(self, log_probs: torch.Tensor, blank: int, lengths: torch.Tensor | None = None) -> None:
        # finite floor: the cumulative-sum solution subtracts running sums, and -inf - -inf is nan
        lp = log_probs.float().clamp_min(LOG_FLOOR)
        b, t, _ = lp.shape
        if lengths is not None:  # frames past a row's length: blank with certainty
            pad = torch.arange(t, device=lp.device)[None, :] >= lengths.to(lp.device)[:, None]
            lp = lp.masked_fill(pad[..., None], LOG_FLOOR)
            lp[..., blank] = lp[..., blank].masked_fill(pad, 0.0)
        self.lp = lp  # [B, T, V]
        self.blank = blank
        neg = torch.full((b, t), float("-inf"), dtype=lp.dtype, device=lp.device)
        # empty prefix: r^n = -inf, r^b_t = sum of blank log-probs up to t
        self.r_n = neg  # [B, T]
        self.r_b = lp[..., blank].cumsum(-1)
        self.last = [None] * b  # last label of each row's prefix
        self.length = [0] * b  # labels in each row's prefix
        self.paths = ctc_greedy(lp, blank)  # each row's best-path reading (guided candidates)
        self.score = torch.zeros(b, dtype=lp.dtype, device=lp.device)  # log P(prefix, ...)

    def _extend(self, cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For every row and candidate c in ``cands`` [B, K]: (prefix score [B, K], r_n [B, K, T],
        r_b [B, K, T])."""
        lp, r_n, r_b = self.lp, self.r_n, self.r_b
        b, t, _ = lp.shape
        k = cands.shape[1]
        r_sum = torch.logaddexp(r_n, r_b)  # [B, T]
        # phi_t(c) = r^b_t + (r^n_t if c != last else -inf): prefix mass that may be followed by c
        last = torch.tensor([-1 if x is None else x for x in self.last], device=lp.device)
        same = cands == last[:, None]  # [B, K]
        phi = torch.where(same[..., None], r_b[:, None, :], r_sum[:, None, :])  # [B, K, T]
        log_y = torch.gather(lp, 2, cands[:, None, :].expand(b, t, k)).transpose(1, 2)  # [B, K, T]
        u = torch.cat([torch.full_like(phi[..., :1], float("-inf")), phi[..., :-1]], dim=-1)
        empty = (last < 0)[:, None].expand(b, k)  # frame 0 starts c only for the empty prefix
        u[..., 0] = torch.where(empty, torch.zeros_like(u[..., 0]), u[..., 0])
        new_n = _log_cumsum_linear(log_y, u)  # r^n_t(h+c)
        # r^b_t(h+c) = (r^b_{t-1}(h+c) + r^n_{t-1}(h+c)) * y_t(blank)
        log_blank = lp[..., self.blank][:, None, :].expand(b, k, t)
        new_n_prev = torch.cat([torch.full_like(new_n[..., :1], float("-inf")), new_n[..., :-1]], dim=-1)
        new_b = _log_cumsum_linear(log_blank, new_n_prev)
        score = torch.logsumexp(u + log_y, dim=-1)  # P(h+c, ...) = sum_t phi_{t-1}(c) y_t(c)
        score = score.masked_fill(cands == self.blank, float("-inf"))
        return score, new_n, new_b

    def next_scores(self, cands: torch.Tensor | None = None) -> torch.Tensor:
        """log P_ctc(prefix + c, ...) - log P_ctc(prefix, ...) for the candidates ``cands`` [B, K]
        (default: every label, [B, V]). The blank scores -inf: ending is ``end_scores``."""
        if cands is None:
            cands = torch.arange(self.lp.shape[2], device=self.lp.device).expand(self.lp.shape[0], -1)
        cands = cands.to(self.lp.device)
        score, new_n, new_b = self._extend(cands)
        self._cached = (cands, score, new_n, new_b)
        return (score - self.score[:, None]).float()

    def path_labels(self, window: int = 1) -> torch.Tensor:
        """[B, 2 * window + 1]: the labels of each row's best-path reading around its prefix length
        (blank where out of range): the CTC reading's next label is a candidate while the prefix
        follows it, and its neighbours when the two are a character apart. Candidates from the whole
        path would cost one prefix-score pass per distinct character of the line."""
        rows = []
        for path, n in zip(self.paths, self.length, strict=True):
            rows.append(
                [path[j] if 0 <= j < len(path) else self.blank for j in range(n - window, n + window + 1)]
            )
        return torch.tensor(rows, dtype=torch.long, device=self.lp.device)

    def end_scores(self) -> torch.Tensor:
        """[B]: log P_ctc(the prefix is the whole transcript) - log P_ctc(prefix, ...)."""
        return (torch.logaddexp(self.r_n[:, -1], self.r_b[:, -1]) - self.score).float()

    def advance(self, chosen: list[int | None]) -> None:
        """Append ``chosen[i]`` to row i's prefix (None: the row is finished, left unchanged)."""
        cached = getattr(self, "_cached", None)
        for i, c in enumerate(chosen):
            if c is None:
                continue
            hit = None if cached is None else (cached[0][i] == c).nonzero()
            if hit is None or len(hit) == 0:
                one = torch.full((self.lp.shape[0], 1), c, dtype=torch.long, device=self.lp.device)
                score, new_n, new_b = self._extend(one)
                j = 0
            else:
                _, score, new_n, new_b = cached
                j = int(hit[0])
            self.r_n[i] = new_n[i, j]
            self.r_b[i] = new_b[i, j]
            self.score[i] = score[i, j]
            self.last[i] = c
            self.length[i] += 1
        self._cached = None
