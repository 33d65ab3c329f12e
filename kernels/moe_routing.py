"""MoE routing: scores, greedy top-k, weight normalisation/scaling and per-expert token counts.

DeepSeek-V2 ``MoEGate`` (deepseek-ocr.md §9), eval path, for router logits [M, E] computed in fp32:

    scores = softmax(logits)              (scoring_func "softmax"; "sigmoid" also supported)
    w, idx = topk(scores, k)              (topk_method "greedy")
    w = w / (sum(w) + 1e-20) * routed_scaling_factor   if norm_topk_prob and k > 1
    w = w * routed_scaling_factor                      otherwise

The kernel does all of it per block of token rows with the whole expert axis in registers, picks
the k winners by k rounds of argmax (ties go to the lower expert id), and adds the block's picks to
``expert_counts`` [E] with one vector atomic per program. Outputs come in descending-score order;
the reference's ``torch.topk(sorted=False)`` order is unspecified, so compare as sets.
"""

from __future__ import annotations

import torch

from ocrstream.kernels._compat import check_launchable, next_power_of_2, tl, triton

SCORING_FUNCS = {"softmax": 0, "sigmoid": 1}


@triton.jit
def moe_routing_kernel(
    # Pointers
    logits_ptr,
    topk_weights_ptr,
    topk_ids_ptr,
    expert_counts_ptr,
    # Dimensions: M tokens, E experts
    M,
    E,
    # Strides: elements to step to the next token row
    stride_lm,
    stride_wm,
    stride_im,
    routed_scaling_factor,
    # Meta-parameters
    TOP_K: tl.constexpr,
    SCORING: tl.constexpr,  # 0 softmax, 1 sigmoid
    NORM_TOPK_PROB: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr,
    BLOCK_SIZE_E: tl.constexpr,
    BLOCK_SIZE_K: tl.constexpr,
):
    pid_m = tl.program_id(axis=0)
    offs_m = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_e = tl.arange(0, BLOCK_SIZE_E)
    offs_k = tl.arange(0, BLOCK_SIZE_K)
    m_mask = offs_m < M
    e_mask = offs_e < E
    mask = m_mask[:, None] & e_mask[None, :]

    l_ptrs = logits_ptr + offs_m[:, None] * stride_lm + offs_e[None, :]
    logits = tl.load(l_ptrs, mask=mask, other=float("-inf")).to(tl.float32)
    if SCORING == 0:
        # Rows past M are all -inf; give them a finite max so they stay NaN-free (never stored).
        row_max = tl.max(logits, axis=1)
        row_max = tl.where(m_mask, row_max, 0.0)
        num = tl.exp(logits - row_max[:, None])
        num = tl.where(mask, num, 0.0)
        den = tl.sum(num, axis=1)
        den = tl.where(m_mask, den, 1.0)
        scores = num / den[:, None]
    else:
        scores = tl.sigmoid(logits)
    # Scores are >= 0: padded experts at -1 are never picked, picked ones drop to -2.
    scores = tl.where(e_mask[None, :], scores, -1.0)

    topk_w = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_K), dtype=tl.float32)
    topk_i = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_K), dtype=tl.int32)
    counts = tl.zeros((BLOCK_SIZE_E,), dtype=tl.int32)
    for k in tl.static_range(TOP_K):
        best = tl.max(scores, axis=1)  # [BLOCK_SIZE_M]
        best_idx = tl.argmax(scores, axis=1).to(tl.int32)
        picked = offs_e[None, :] == best_idx[:, None]  # [BLOCK_SIZE_M, BLOCK_SIZE_E]
        scores = tl.where(picked, -2.0, scores)
        topk_w = tl.where(offs_k[None, :] == k, best[:, None], topk_w)
        topk_i = tl.where(offs_k[None, :] == k, best_idx[:, None], topk_i)
        counts += tl.sum((picked & m_mask[:, None]).to(tl.int32), axis=0)

    k_mask = offs_k < TOP_K
    if NORM_TOPK_PROB:
        denom = tl.sum(tl.where(k_mask[None, :], topk_w, 0.0), axis=1) + 1e-20
        topk_w = topk_w / denom[:, None] * routed_scaling_factor
    else:
        topk_w = topk_w * routed_scaling_factor

    out_mask = m_mask[:, None] & k_mask[None, :]
    w_ptrs = topk_weights_ptr + offs_m[:, None] * stride_wm + offs_k[None, :]
    i_ptrs = topk_ids_ptr + offs_m[:, None] * stride_im + offs_k[None, :]
    tl.store(w_ptrs, topk_w, mask=out_mask)
    tl.store(i_ptrs, topk_i, mask=out_mask)
    tl.atomic_add(expert_counts_ptr + offs_e, counts, mask=e_mask)


def _check_route_args(logits: torch.Tensor, top_k: int, scoring_func: str, topk_method: str) -> None:
    if logits.dim() != 2:
        raise ValueError(f"router logits must be [M, E], got shape {tuple(logits.shape)}")
    E = logits.shape[1]
    if not 1 <= top_k <= E:
        raise ValueError(f"top_k {top_k} must be in [1, n_experts={E}]")
    if scoring_func not in SCORING_FUNCS:
        raise ValueError(
            f"scoring_func {scoring_func!r} unsupported; expected one of {sorted(SCORING_FUNCS)}"
        )
    if topk_method != "greedy":
        raise ValueError(
            f"topk_method {topk_method!r} unsupported; only 'greedy' (DeepSeek-OCR's) is implemented"
        )


def moe_routing_triton(
    logits: torch.Tensor,
    top_k: int,
    norm_topk_prob: bool = False,
    routed_scaling_factor: float = 1.0,
    scoring_func: str = "softmax",
    topk_method: str = "greedy",
    block_size_m: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Route logits [M, E] -> (topk_weights fp32 [M, k], topk_ids int32 [M, k], expert_counts int32 [E])."""
    check_launchable(logits)
    _check_route_args(logits, top_k, scoring_func, topk_method)
    if logits.stride(1) != 1:
        raise ValueError(f"expert dim of logits must be contiguous, strides {logits.stride()}")
    M, E = logits.shape
    topk_weights = torch.empty((M, top_k), dtype=torch.float32, device=logits.device)
    topk_ids = torch.empty((M, top_k), dtype=torch.int32, device=logits.device)
    expert_counts = torch.zeros((E,), dtype=torch.int32, device=logits.device)
    BLOCK_SIZE_E = next_power_of_2(E)
    if block_size_m is None:
        block_size_m = max(1, min(next_power_of_2(M), 4096 // BLOCK_SIZE_E))
    grid = (triton.cdiv(M, block_size_m),)
    if M:
        moe_routing_kernel[grid](
            logits,
            topk_weights,
            topk_ids,
            expert_counts,
            M,
            E,
            logits.stride(0),
            topk_weights.stride(0),
            topk_ids.stride(0),
            float(routed_scaling_factor),
            TOP_K=top_k,
            SCORING=SCORING_FUNCS[scoring_func],
            NORM_TOPK_PROB=bool(norm_topk_prob and top_k > 1),
            BLOCK_SIZE_M=block_size_m,
            BLOCK_SIZE_E=BLOCK_SIZE_E,
            BLOCK_SIZE_K=next_power_of_2(top_k),
        )
    return topk_weights, topk_ids, expert_counts


def moe_routing_ref(
    logits: torch.Tensor,
    top_k: int,
    norm_topk_prob: bool = False,
    routed_scaling_factor: float = 1.0,
    scoring_func: str = "softmax",
    topk_method: str = "greedy",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DeepSeek-V2 ``MoEGate.forward`` after the fp32 gate matmul, plus the expert histogram."""
    _check_route_args(logits, top_k, scoring_func, topk_method)
    logits = logits.to(torch.float32)
    if scoring_func == "softmax":
        scores = logits.softmax(dim=-1, dtype=torch.float32)
    else:
        scores = logits.sigmoid()
    topk_weight, topk_idx = torch.topk(scores, k=top_k, dim=-1, sorted=False)
    if top_k > 1 and norm_topk_prob:
        denominator = topk_weight.sum(dim=-1, keepdim=True) + 1e-20
        topk_weight = topk_weight / denominator * routed_scaling_factor
    else:
        topk_weight = topk_weight * routed_scaling_factor
    counts = torch.bincount(topk_idx.flatten(), minlength=logits.shape[1]).to(torch.int32)
    return topk_weight, topk_idx.to(torch.int32), counts
