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

from dataclasses import dataclass

import torch

# log-probability floor: e^-30 is zero for every purpose here, and it keeps the running sums of
# the cumulative solution small enough for float32 (at most 30 per frame)
LOG_FLOOR = -30.0
# Speculative decoding guesses the CTC reading's labels up to the first one the CTC head gives
# less than this probability: below it the guided choice often differs (on validation lines,
# labels read at 0.5-0.7 were kept about half the time, at >= 0.9 over 90%)
DRAFT_SURE = 0.7


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


def _reading(lp: torch.Tensor, blank: int) -> tuple[list[list[int]], list[list[float]]]:
    """Per row of log-probabilities [B, T, V]: the greedy best-path labels (as ``ctc_greedy``) and
    for each label its top probability over the frames that read it."""
    top = lp.max(-1)
    paths, sure = [], []
    for labels, probs in zip(top.indices.tolist(), top.values.exp().tolist(), strict=True):
        ids, conf, prev = [], [], blank
        for lab, p in zip(labels, probs, strict=True):
            if lab != blank and lab != prev:
                ids.append(lab)
                conf.append(p)
            elif lab != blank:
                conf[-1] = max(conf[-1], p)
            prev = lab
        paths.append(ids)
        sure.append(conf)
    return paths, sure


def _log_cumsum_linear(log_y: torch.Tensor, log_u: torch.Tensor) -> torch.Tensor:
    """Solve r_t = (r_{t-1} + u_t) * y_t (r_{-1} = 0) in log space for all t: [..., T] -> [..., T].

    r_t = sum_{s<=t} u_s * prod_{k=s..t} y_k = exp(C_t) * sum_{s<=t} u_s / exp(C_{s-1}),
    with C the cumulative sum of log y.
    """
    c = log_y.cumsum(-1)
    c_prev = torch.cat([torch.zeros_like(c[..., :1]), c[..., :-1]], dim=-1)
    return c + torch.logcumsumexp(log_u - c_prev, dim=-1)


def _shift(x: torch.Tensor, first: float) -> torch.Tensor:
    """[..., T] -> [..., T]: x_{t-1}, with ``first`` at t = 0."""
    return torch.cat([torch.full_like(x[..., :1], first), x[..., :-1]], dim=-1)


@dataclass
class _Prefixes:
    """One partial transcript per entry, over the frames of scorer row ``rows[j]``."""

    rows: torch.Tensor  # [R] long
    r_n: torch.Tensor  # [R, T] log P(prefix, ending in its last label at frame t)
    r_b: torch.Tensor  # [R, T] log P(prefix, ending in blank at frame t)
    score: torch.Tensor  # [R] log P(prefix, ...)
    last: torch.Tensor  # [R] long: the prefix's last label, -1 for the empty prefix
    length: list[int]  # labels in the prefix

    def take(self, idx: list[int]) -> _Prefixes:
        t = torch.tensor(idx, device=self.rows.device)
        return _Prefixes(
            self.rows[t], self.r_n[t], self.r_b[t], self.score[t], self.last[t], [self.length[i] for i in idx]
        )


class CtcPrefixScorer:
    """CTC prefix scores for B rows of per-frame log-probabilities [B, T, V] (float32 math).

    Per decoding step: ``next_scores`` scores a few candidate labels per row (one log-sum-exp over
    frames each), ``advance`` appends each row's chosen label (the frame recursion, solved for that
    label only), and ``keep`` drops the rows that are done. Speculative decoding scores a whole
    draft at once: ``draft`` guesses the next labels, ``lookahead`` scores every prefix along
    them, ``commit`` moves each row to the prefix it accepted.
    """

    def __init__(self, log_probs: torch.Tensor, blank: int, lengths: torch.Tensor | None = None) -> None:
        # finite floor: the cumulative-sum solution subtracts running sums, and -inf - -inf is nan
        lp = log_probs.float().clamp_min(LOG_FLOOR)
        b, t, _ = lp.shape
        dev = lp.device
        if lengths is not None:  # frames past a row's length: blank with certainty
            pad = torch.arange(t, device=dev)[None, :] >= lengths.to(dev)[:, None]
            lp = lp.masked_fill(pad[..., None], LOG_FLOOR)
            lp[..., blank] = lp[..., blank].masked_fill(pad, 0.0)
        self.blank = blank
        # [B, V, T]: each label's frames in one contiguous row, as the candidates are gathered
        self.lp_t = lp.transpose(1, 2).contiguous()
        self.log_blank = lp[..., blank].contiguous()  # [B, T]
        # empty prefix: r^n = -inf, r^b_t = sum of blank log-probs up to t
        self.pre = _Prefixes(
            rows=torch.arange(b, device=dev),
            r_n=torch.full((b, t), float("-inf"), dtype=lp.dtype, device=dev),
            r_b=self.log_blank.cumsum(-1),
            score=torch.zeros(b, dtype=lp.dtype, device=dev),
            last=torch.full((b,), -1, dtype=torch.long, device=dev),
            length=[0] * b,
        )
        # each row's best-path reading (guided candidates, speculative guesses) and how sure
        # the CTC head is of each of its labels
        self.paths, self.sure = _reading(lp, blank)
        # the draft's place in each row's reading: label length + offset comes next (a prefix that
        # dropped or added a character against the reading shifts it)
        self.offset = [0] * b

    # -- one prefix per row --------------------------------------------------------------------

    def next_scores(self, cands: torch.Tensor | None = None) -> torch.Tensor:
        """log P_ctc(prefix + c, ...) - log P_ctc(prefix, ...) for the candidates ``cands`` [B, K]
        (default: every label, [B, V]). The blank scores -inf: ending is ``end_scores``."""
        return self._next_scores(self.pre, cands)

    def path_labels(self, window: int = 1) -> torch.Tensor:
        """[B, 2 * window + 1]: the labels of each row's best-path reading around its prefix length
        (blank where out of range): the CTC reading's next label is a candidate while the prefix
        follows it, and its neighbours when the two are a character apart. Candidates from the whole
        path would cost one prefix-score pass per distinct character of the line."""
        return self._path_labels(self.pre, window)

    def end_scores(self) -> torch.Tensor:
        """[B]: log P_ctc(the prefix is the whole transcript) - log P_ctc(prefix, ...)."""
        return self._end_scores(self.pre)

    def advance(self, chosen: list[int | None]) -> None:
        """Append ``chosen[i]`` to row i's prefix (None: the row is finished, left unchanged).

        Only the chosen labels get the full recursion over frames (r^n, r^b of the new prefix);
        ``next_scores`` needs the prefix score alone, for every candidate."""
        picked = [i for i, c in enumerate(chosen) if c is not None]
        if picked:
            labels = torch.tensor([chosen[i] for i in picked], device=self.lp_t.device)
            self._put(picked, self._extend(self.pre.take(picked), labels))

    def keep(self, dst: list[int], src: list[int], n: int) -> None:
        """Compact the batch to its first ``n`` rows after moving rows ``src`` into rows ``dst``
        (``generation.compact_rows``): the rows left out are done."""
        if dst:
            self._put(dst, self.pre.take(src))
            s = torch.tensor(src, device=self.lp_t.device)
            self.lp_t[dst], self.log_blank[dst] = self.lp_t[s], self.log_blank[s]
            for lst in (self.paths, self.sure, self.offset):
                for a, b in zip(dst, src, strict=True):
                    lst[a] = lst[b]
        p = self.pre
        self.pre = _Prefixes(p.rows[:n], p.r_n[:n], p.r_b[:n], p.score[:n], p.last[:n], p.length[:n])
        self.lp_t, self.log_blank = self.lp_t[:n], self.log_blank[:n]
        del self.paths[n:], self.sure[n:], self.offset[n:]

    # -- speculative decoding ------------------------------------------------------------------

    def draft(self, n: int, sure: float = DRAFT_SURE) -> list[list[int]]:
        """Per row, up to ``n`` labels of its CTC reading after the prefix, up to the first one the
        CTC head is less than ``sure`` of: the guess a speculative decoder checks in one pass (only
        speed depends on it, never the result)."""
        out = []
        for path, conf, k, off in zip(self.paths, self.sure, self.pre.length, self.offset, strict=True):
            start = max(0, k + off)
            guess = path[start : start + n]
            unsure = [q for q, c in enumerate(conf[start : start + n]) if c < sure]
            out.append(guess[: unsure[0]] if unsure else guess)
        return out

    def lookahead(self, guesses: list[list[int]]) -> CtcLookahead:
        """Every prefix along each row's guessed labels: row j's prefix plus the first k labels of
        ``guesses[j]``, k = 0 .. len(guesses[j]), row after row (``CtcLookahead.start``)."""
        if not any(guesses):
            return CtcLookahead(self, self.pre, list(range(len(guesses))))
        members = [list(range(len(guesses)))]  # members[k]: the rows guessing k labels or more
        steps = [self.pre]
        for k in range(max(map(len, guesses))):
            keep = [p for p, j in enumerate(members[-1]) if len(guesses[j]) > k]
            members.append([members[-1][p] for p in keep])
            labels = torch.tensor([guesses[j][k] for j in members[-1]], device=self.lp_t.device)
            steps.append(self._extend(steps[-1].take(keep), labels))
        where = {(j, k): p for k, rows in enumerate(members) for p, j in enumerate(rows)}
        base = [0]
        for rows in members[:-1]:
            base.append(base[-1] + len(rows))
        order = [base[k] + where[j, k] for j, g in enumerate(guesses) for k in range(len(g) + 1)]
        every = _Prefixes(
            rows=torch.cat([st.rows for st in steps]),
            r_n=torch.cat([st.r_n for st in steps]),
            r_b=torch.cat([st.r_b for st in steps]),
            score=torch.cat([st.score for st in steps]),
            last=torch.cat([st.last for st in steps]),
            length=[n for st in steps for n in st.length],
        )
        start = [0]
        for g in guesses[:-1]:
            start.append(start[-1] + len(g) + 1)
        return CtcLookahead(self, every.take(order), start)

    def commit(self, look: CtcLookahead, at: list[int], chosen: list[int | None]) -> None:
        """Row i continues from its lookahead prefix ``at[i]`` (the prefix plus ``at[i]`` guessed
        labels) plus ``chosen[i]`` (None: the row is finished, left unchanged)."""
        picked = [i for i, c in enumerate(chosen) if c is not None]
        if not picked:
            return
        labels = torch.tensor([chosen[i] for i in picked], device=self.lp_t.device)
        self._put(picked, self._extend(look.pre.take([look.start[i] + at[i] for i in picked]), labels))
        for i in picked:  # realign the draft: the reading's label nearest to the one just chosen
            path, k = self.paths[i], self.pre.length[i] - 1
            for off in (self.offset[i], self.offset[i] + 1, self.offset[i] - 1):
                if 0 <= k + off < len(path) and path[k + off] == chosen[i]:
                    self.offset[i] = off
                    break

    # -- on explicit prefixes ------------------------------------------------------------------

    def _put(self, idx: list[int], new: _Prefixes) -> None:
        t = torch.tensor(idx, device=self.lp_t.device)
        p = self.pre
        p.r_n[t], p.r_b[t], p.score[t], p.last[t] = new.r_n, new.r_b, new.score, new.last
        for i, n in zip(idx, new.length, strict=True):
            p.length[i] = n

    def _terms(self, pre: _Prefixes, cands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For candidates ``cands`` [R, K] of prefixes ``pre``: (u, log_y), each [R, K, T], with
        log_y_t = log y_t(c) and u_t = phi_{t-1}(c), the prefix mass before frame t that c may
        follow: phi_t(c) = r^b_t + (r^n_t unless c repeats the prefix's last label)."""
        # shifted by one frame before expanding to the K candidates (cheaper than after)
        b_prev = _shift(pre.r_b, float("-inf"))  # [R, T]
        sum_prev = _shift(torch.logaddexp(pre.r_n, pre.r_b), float("-inf"))
        sum_prev[:, 0].masked_fill_(pre.last < 0, 0.0)  # frame 0 starts c only for the empty prefix
        same = (cands == pre.last[:, None])[..., None]  # [R, K, 1]; never for the empty prefix
        u = torch.where(same, b_prev[:, None, :], sum_prev[:, None, :])
        log_y = self.lp_t[pre.rows[:, None], cands]  # [R, K, T]
        return u, log_y

    def _prefix_scores(self, cands: torch.Tensor, u: torch.Tensor, log_y: torch.Tensor) -> torch.Tensor:
        """log P(prefix + c, ...) = log sum_t phi_{t-1}(c) y_t(c), [R, K]; -inf for the blank."""
        score = torch.logsumexp(u + log_y, dim=-1)
        return score.masked_fill(cands == self.blank, float("-inf"))

    def _next_scores(self, pre: _Prefixes, cands: torch.Tensor | None) -> torch.Tensor:
        if cands is None:
            v = self.lp_t.shape[1]
            cands = torch.arange(v, device=self.lp_t.device).expand(len(pre.length), -1)
        cands = cands.to(self.lp_t.device)
        u, log_y = self._terms(pre, cands)
        return (self._prefix_scores(cands, u, log_y) - pre.score[:, None]).float()

    def _path_labels(self, pre: _Prefixes, window: int) -> torch.Tensor:
        rows = []
        for r, n in zip(pre.rows.tolist(), pre.length, strict=True):
            path = self.paths[r]
            rows.append(
                [path[j] if 0 <= j < len(path) else self.blank for j in range(n - window, n + window + 1)]
            )
        return torch.tensor(rows, dtype=torch.long, device=self.lp_t.device)

    def _end_scores(self, pre: _Prefixes) -> torch.Tensor:
        return (torch.logaddexp(pre.r_n[:, -1], pre.r_b[:, -1]) - pre.score).float()

    def _extend(self, pre: _Prefixes, labels: torch.Tensor) -> _Prefixes:
        """The prefixes ``pre`` each extended by one label, ``labels`` [R]."""
        cands = labels[:, None]
        u, log_y = self._terms(pre, cands)
        new_n = _log_cumsum_linear(log_y, u)  # r^n_t(h+c), [R, 1, T]
        # r^b_t(h+c) = (r^b_{t-1}(h+c) + r^n_{t-1}(h+c)) * y_t(blank)
        new_b = _log_cumsum_linear(self.log_blank[pre.rows][:, None], _shift(new_n, float("-inf")))
        return _Prefixes(
            pre.rows,
            new_n[:, 0],
            new_b[:, 0],
            self._prefix_scores(cands, u, log_y)[:, 0],
            labels.clone(),
            [n + 1 for n in pre.length],
        )


class CtcLookahead:
    """The prefixes of ``CtcPrefixScorer.lookahead``, scored like the scorer's own rows."""

    def __init__(self, scorer: CtcPrefixScorer, pre: _Prefixes, start: list[int]) -> None:
        self.scorer, self.pre = scorer, pre
        self.start = start  # each row's first entry

    def next_scores(self, cands: torch.Tensor | None = None) -> torch.Tensor:
        return self.scorer._next_scores(self.pre, cands)

    def path_labels(self, window: int = 1) -> torch.Tensor:
        return self.scorer._path_labels(self.pre, window)

    def end_scores(self) -> torch.Tensor:
        return self.scorer._end_scores(self.pre)
