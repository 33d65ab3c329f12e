"""Token permutation by expert (align to the GEMM block size) and the weighted un-permutation.

Terms (after vLLM's ``moe_align_block_size`` idea): the routing gives ``topk_ids`` [M, K]; flattened,
entry ``a = t*K + j`` is one *assignment* of token t to expert ``topk_ids[t, j]``. The grouped GEMM
wants every BLOCK_SIZE_M rows to belong to one expert, so assignments are grouped by expert and each
expert's group is padded up to a multiple of BLOCK_SIZE_M:

- ``sorted_token_ids`` [P_max]: assignment ids in expert order; padding slots hold ``M*K``
  (a sentinel past every real id). P_max = M*K + E*(BLOCK_SIZE_M-1) bounds the padded length
  without reading counts back to the host.
- ``expert_ids`` [P_max / BLOCK_SIZE_M]: the expert of each row block, -1 past the end.
- ``expert_offsets`` [E+1]: padded start row of each expert; ``expert_offsets[E]`` is the padded
  total (``num_tokens_post_padded``).
- ``inv_positions`` [M*K]: the row of each assignment in the sorted order (the inverse map).

Three kernels: a histogram (skipped when the router already counted), the offsets + block->expert
table, and the scatter (positions handed out by an atomic cursor per expert: rows within one
expert come in arbitrary order, which changes nothing numerically because every GEMM row and the
per-token sum over K are independent of it). ``moe_combine`` un-permutes: ``out[t] = Σ_j w[t, j] ·
y[inv[t*K+j]]`` with the sum in fp32, cast once, as DeepSeek-V2's ``moe_infer`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ocrstream.kernels._compat import check_launchable, next_power_of_2, round_to, tl, triton


@triton.jit
def moe_histogram_kernel(
    # Pointers
    topk_ids_ptr,
    expert_counts_ptr,
    # Dimensions
    numel,
    # Meta-parameters
    BLOCK_SIZE: tl.constexpr,
):
    offs = tl.program_id(axis=0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < numel
    ids = tl.load(topk_ids_ptr + offs, mask=mask, other=0)
    tl.atomic_add(expert_counts_ptr + ids, 1, mask=mask)


@triton.jit
def moe_align_kernel(
    # Pointers
    expert_counts_ptr,
    expert_offsets_ptr,
    expert_ids_ptr,
    # Dimensions
    E,
    num_blocks,  # length of expert_ids
    # Meta-parameters
    BLOCK_SIZE_M: tl.constexpr,  # GEMM row block the groups are padded to
    BLOCK_SIZE_E: tl.constexpr,
    BLOCK_SIZE_B: tl.constexpr,  # row blocks labelled per program
):
    pid = tl.program_id(axis=0)
    offs_e = tl.arange(0, BLOCK_SIZE_E)
    e_mask = offs_e < E
    counts = tl.load(expert_counts_ptr + offs_e, mask=e_mask, other=0)
    padded = (counts + BLOCK_SIZE_M - 1) // BLOCK_SIZE_M * BLOCK_SIZE_M
    ends = tl.cumsum(padded, axis=0)  # inclusive: padded end row of each expert
    total = tl.sum(padded, axis=0)
    if pid == 0:
        tl.store(expert_offsets_ptr + offs_e, ends - padded, mask=e_mask)
        tl.store(expert_offsets_ptr + E, total)
    # Block b starts at row b*BLOCK_SIZE_M; its expert is the number of experts ending at or before.
    offs_b = pid * BLOCK_SIZE_B + tl.arange(0, BLOCK_SIZE_B)
    starts = offs_b * BLOCK_SIZE_M
    ended = (ends[None, :] <= starts[:, None]) & e_mask[None, :]  # [BLOCK_SIZE_B, BLOCK_SIZE_E]
    expert = tl.sum(ended.to(tl.int32), axis=1)
    expert = tl.where(starts < total, expert, -1)
    tl.store(expert_ids_ptr + offs_b, expert, mask=offs_b < num_blocks)


@triton.jit
def moe_scatter_kernel(
    # Pointers
    topk_ids_ptr,
    expert_offsets_ptr,
    cursor_ptr,
    sorted_token_ids_ptr,
    inv_positions_ptr,
    # Dimensions
    numel,  # M*K assignments
    # Meta-parameters
    BLOCK_SIZE: tl.constexpr,
):
    offs = tl.program_id(axis=0) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < numel
    expert = tl.load(topk_ids_ptr + offs, mask=mask, other=0)
    rank = tl.atomic_add(cursor_ptr + expert, 1, mask=mask)  # distinct per lane, also for equal experts
    start = tl.load(expert_offsets_ptr + expert, mask=mask, other=0)
    pos = start + rank
    tl.store(sorted_token_ids_ptr + pos, offs, mask=mask)
    tl.store(inv_positions_ptr + offs, pos, mask=mask)


@triton.jit
def moe_combine_kernel(
    # Pointers
    y_ptr,
    inv_positions_ptr,
    topk_weights_ptr,
    out_ptr,
    # Dimensions: M tokens, N features
    M,
    N,
    # Strides: elements to the next row
    stride_ym,
    stride_wm,
    stride_om,
    # Meta-parameters
    TOP_K: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr,
    BLOCK_SIZE_N: tl.constexpr,
):
    pid_m = tl.program_id(axis=0)
    pid_n = tl.program_id(axis=1)
    offs_m = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    m_mask = offs_m < M
    mask = m_mask[:, None] & (offs_n < N)[None, :]
    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        pos = tl.load(inv_positions_ptr + offs_m * TOP_K + j, mask=m_mask, other=0)
        w = tl.load(topk_weights_ptr + offs_m * stride_wm + j, mask=m_mask, other=0.0).to(tl.float32)
        y_ptrs = y_ptr + pos.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
        y = tl.load(y_ptrs, mask=mask, other=0.0).to(tl.float32)
        acc += y * w[:, None]
    o_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(o_ptrs, round_to(acc, out_ptr.dtype.element_ty), mask=mask)


@dataclass(frozen=True)
class MoeAlignment:
    """Expert-sorted, block-padded view of the assignments (see the module docstring)."""

    sorted_token_ids: torch.Tensor  # int32 [P_max]
    expert_ids: torch.Tensor  # int32 [P_max // block_size_m]
    expert_offsets: torch.Tensor  # int32 [E + 1]; [E] = padded total
    inv_positions: torch.Tensor  # int32 [M * K]
    block_size_m: int
    num_assignments: int  # M * K; also the padding sentinel

    @property
    def num_tokens_post_padded(self) -> torch.Tensor:
        return self.expert_offsets[-1:]


def _check_topk_ids(topk_ids: torch.Tensor, num_experts: int) -> None:
    if topk_ids.dim() != 2 or topk_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"topk_ids must be int32/int64 [M, K], got {topk_ids.dtype} {tuple(topk_ids.shape)}")
    if num_experts < 1:
        raise ValueError(f"num_experts must be >= 1, got {num_experts}")


def moe_align_triton(
    topk_ids: torch.Tensor,
    num_experts: int,
    block_size_m: int,
    expert_counts: torch.Tensor | None = None,
    block_size: int = 1024,
) -> MoeAlignment:
    """Group assignments by expert, padded per expert to ``block_size_m`` rows."""
    check_launchable(topk_ids)
    _check_topk_ids(topk_ids, num_experts)
    dev = topk_ids.device
    ids = topk_ids.to(torch.int32).contiguous().view(-1)
    numel = ids.numel()
    max_padded = numel + num_experts * (block_size_m - 1)
    num_blocks = triton.cdiv(max_padded, block_size_m)
    if expert_counts is None:
        expert_counts = torch.zeros((num_experts,), dtype=torch.int32, device=dev)
        if numel:
            moe_histogram_kernel[(triton.cdiv(numel, block_size),)](
                ids, expert_counts, numel, BLOCK_SIZE=block_size
            )
    elif expert_counts.shape != (num_experts,) or expert_counts.dtype != torch.int32:
        raise ValueError(
            f"expert_counts must be int32 [{num_experts}], got {expert_counts.dtype} {tuple(expert_counts.shape)}"
        )
    sorted_token_ids = torch.full((num_blocks * block_size_m,), numel, dtype=torch.int32, device=dev)
    expert_ids = torch.empty((num_blocks,), dtype=torch.int32, device=dev)
    expert_offsets = torch.empty((num_experts + 1,), dtype=torch.int32, device=dev)
    inv_positions = torch.empty((numel,), dtype=torch.int32, device=dev)
    BLOCK_SIZE_B = min(next_power_of_2(num_blocks), 1024)
    moe_align_kernel[(triton.cdiv(num_blocks, BLOCK_SIZE_B),)](
        expert_counts,
        expert_offsets,
        expert_ids,
        num_experts,
        num_blocks,
        BLOCK_SIZE_M=block_size_m,
        BLOCK_SIZE_E=next_power_of_2(num_experts),
        BLOCK_SIZE_B=BLOCK_SIZE_B,
    )
    if numel:
        cursor = torch.zeros((num_experts,), dtype=torch.int32, device=dev)
        moe_scatter_kernel[(triton.cdiv(numel, block_size),)](
            ids, expert_offsets, cursor, sorted_token_ids, inv_positions, numel, BLOCK_SIZE=block_size
        )
    return MoeAlignment(sorted_token_ids, expert_ids, expert_offsets, inv_positions, block_size_m, numel)


def moe_combine_triton(
    y_sorted: torch.Tensor,
    inv_positions: torch.Tensor,
    topk_weights: torch.Tensor,
    out_dtype: torch.dtype | None = None,
    block_size_m: int | None = None,
    block_size_n: int | None = None,
) -> torch.Tensor:
    """out[t] = Σ_j topk_weights[t, j] · y_sorted[inv_positions[t*K + j]] (fp32 sum, one cast)."""
    check_launchable(y_sorted, inv_positions, topk_weights)
    M, K = topk_weights.shape
    if inv_positions.shape != (M * K,) or inv_positions.dtype != torch.int32:
        raise ValueError(
            f"inv_positions must be int32 [{M * K}], got {inv_positions.dtype} {tuple(inv_positions.shape)}"
        )
    if y_sorted.dim() != 2 or y_sorted.stride(1) != 1 or topk_weights.stride(1) != 1:
        raise ValueError(
            f"y_sorted must be [P, N] row-major, got {tuple(y_sorted.shape)} strides {y_sorted.stride()}"
        )
    N = y_sorted.shape[1]
    out = torch.empty((M, N), dtype=out_dtype or y_sorted.dtype, device=y_sorted.device)
    if M == 0:
        return out
    BLOCK_SIZE_N = block_size_n or min(next_power_of_2(N), 1024)
    BLOCK_SIZE_M = block_size_m or max(1, min(next_power_of_2(M), 4096 // BLOCK_SIZE_N))
    grid = (triton.cdiv(M, BLOCK_SIZE_M), triton.cdiv(N, BLOCK_SIZE_N))
    moe_combine_kernel[grid](
        y_sorted,
        inv_positions,
        topk_weights,
        out,
        M,
        N,
        y_sorted.stride(0),
        topk_weights.stride(0),
        out.stride(0),
        TOP_K=K,
        BLOCK_SIZE_M=BLOCK_SIZE_M,
        BLOCK_SIZE_N=BLOCK_SIZE_N,
    )
    return out


def moe_align_ref(topk_ids: torch.Tensor, num_experts: int, block_size_m: int) -> MoeAlignment:
    """Same layout from a stable sort (rows within an expert in assignment order)."""
    _check_topk_ids(topk_ids, num_experts)
    dev = topk_ids.device
    ids = topk_ids.to(torch.int64).reshape(-1)
    numel = ids.numel()
    counts = torch.bincount(ids, minlength=num_experts)
    padded = (counts + block_size_m - 1) // block_size_m * block_size_m
    offsets = torch.zeros(num_experts + 1, dtype=torch.int64, device=dev)
    offsets[1:] = torch.cumsum(padded, 0)
    order = torch.sort(ids, stable=True).indices
    rank = torch.arange(numel, device=dev) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    pos = offsets[ids[order]] + rank
    max_padded = numel + num_experts * (block_size_m - 1)
    num_blocks = -(-max_padded // block_size_m)
    sorted_ids = torch.full((num_blocks * block_size_m,), numel, dtype=torch.int32, device=dev)
    sorted_ids[pos] = order.to(torch.int32)
    inv = torch.empty(numel, dtype=torch.int32, device=dev)
    inv[order] = pos.to(torch.int32)
    block_start = torch.arange(num_blocks, device=dev) * block_size_m
    expert_ids = torch.searchsorted(offsets[1:], block_start, right=True).to(torch.int32)
    expert_ids[block_start >= offsets[-1]] = -1
    return MoeAlignment(sorted_ids, expert_ids, offsets.to(torch.int32), inv, block_size_m, numel)


def moe_combine_ref(
    y_sorted: torch.Tensor,
    inv_positions: torch.Tensor,
    topk_weights: torch.Tensor,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """DeepSeek-V2 ``moe_infer`` tail: expert outputs to fp32, times weights, sum over K, cast."""
    M, K = topk_weights.shape
    y = y_sorted[inv_positions.long()].view(M, K, -1)
    out = y.to(topk_weights.dtype).mul_(topk_weights.unsqueeze(-1)).sum(dim=1)
    return out.to(out_dtype or y_sorted.dtype)
