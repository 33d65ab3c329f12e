"""Fused routed-expert MLP: grouped GEMMs over expert-sorted tokens.

Every DeepSeek-V2 expert computes ``down(silu(gate(x)) * up(x))`` (deepseek-ocr.md §9). With the
assignments grouped by expert and padded to BLOCK_SIZE_M rows (``moe_permute.moe_align_triton``),
two kernels do all experts at once:

1. ``moe_gate_up_kernel``: A = x [M, K] gathered by token (row ``sorted_token_ids // TOP_K``),
   B_gate, B_up = w_gate[e], w_up[e] [N, K] (N = moe_intermediate_size); two fp32 accumulators,
   ``h = silu(g) * u`` computed in fp32 and stored once in the activation dtype at the sorted row.
2. ``moe_down_kernel``: A = h [P, N] (contiguous sorted rows, no gather), B = w_down[e] [K, N];
   stores the expert output y [P, K] in the activation dtype at the sorted row.

``moe_permute.moe_combine_triton`` then sums ``w · y`` over each token's K picks in fp32.
Padding rows load zeros and are never stored. Blocks past the padded total exit at once, so the
grid is an upper bound taken from shapes only (no device->host sync, CUDA-graph friendly).

Block sizes come from ``configs/moe_experts/E=..,N=..,device_name=...json`` (keys = token counts
M, the nearest one is used, as vLLM's ``try_get_optimal_moe_config``); without a file the
defaults below are used and that is logged once per shape. ``bench/kernels.py --tune`` writes the
files with the same name function.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ocrstream.kernels._compat import check_launchable, interpreting, round_to, tl, triton
from ocrstream.kernels.moe_permute import moe_align_triton, moe_combine_triton

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs" / "moe_experts"
CONFIG_KEYS = ("BLOCK_SIZE_M", "BLOCK_SIZE_N", "BLOCK_SIZE_K", "GROUP_SIZE_M", "num_warps", "num_stages")


@triton.jit
def moe_gate_up_kernel(
    # Pointers
    a_ptr,
    w_gate_ptr,
    w_up_ptr,
    h_ptr,
    sorted_token_ids_ptr,
    expert_ids_ptr,
    num_tokens_post_padded_ptr,
    # Dimensions: A [M, K]; W [E, N, K]; H [P, N]; num_valid = M * TOP_K (also the pad sentinel)
    N,
    K,
    num_valid,
    num_blocks_m,
    # Strides: elements per step along each dim
    stride_am,
    stride_ak,
    stride_we,
    stride_wn,
    stride_wk,
    stride_hm,
    stride_hn,
    # Meta-parameters
    TOP_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr,
    BLOCK_SIZE_N: tl.constexpr,
    BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
):
    # Grouped ordering (Triton tutorial 03): neighbouring programs share B tiles in L2.
    pid = tl.program_id(axis=0)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_blocks_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    num_tokens_post_padded = tl.load(num_tokens_post_padded_ptr)
    if pid_m * BLOCK_SIZE_M >= num_tokens_post_padded:
        return
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    offs_sorted = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_token = tl.load(sorted_token_ids_ptr + offs_sorted)
    token_mask = offs_token < num_valid
    offs_row = (offs_token // TOP_K).to(tl.int64)  # the token each assignment came from
    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    n_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_SIZE_K)

    a_ptrs = a_ptr + offs_row[:, None] * stride_am + offs_k[None, :] * stride_ak
    wg_ptrs = w_gate_ptr + expert * stride_we + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
    wu_ptrs = w_up_ptr + expert * stride_we + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
    acc_gate = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        k_mask = offs_k < K - k * BLOCK_SIZE_K
        a = tl.load(a_ptrs, mask=token_mask[:, None] & k_mask[None, :], other=0.0)
        wg = tl.load(wg_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        wu = tl.load(wu_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if UPCAST_DOT:  # the CPU interpreter multiplies bf16 as raw integers; fp32 is exact there
            a, wg, wu = a.to(tl.float32), wg.to(tl.float32), wu.to(tl.float32)
        acc_gate = tl.dot(a, wg, acc_gate, input_precision=DOT_PRECISION)
        acc_up = tl.dot(a, wu, acc_up, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_SIZE_K * stride_ak
        wg_ptrs += BLOCK_SIZE_K * stride_wk
        wu_ptrs += BLOCK_SIZE_K * stride_wk
    h = acc_gate * tl.sigmoid(acc_gate) * acc_up  # silu(g) * u in fp32

    h_ptrs = h_ptr + offs_sorted[:, None].to(tl.int64) * stride_hm + offs_n[None, :] * stride_hn
    tl.store(h_ptrs, round_to(h, h_ptr.dtype.element_ty), mask=token_mask[:, None] & n_mask[None, :])


@triton.jit
def moe_down_kernel(
    # Pointers
    h_ptr,
    w_down_ptr,
    y_ptr,
    sorted_token_ids_ptr,
    expert_ids_ptr,
    num_tokens_post_padded_ptr,
    # Dimensions: H [P, K]; W [E, N, K]; Y [P, N] (here K = moe_intermediate, N = hidden)
    N,
    K,
    num_valid,
    num_blocks_m,
    # Strides: elements per step along each dim
    stride_hm,
    stride_hk,
    stride_we,
    stride_wn,
    stride_wk,
    stride_ym,
    stride_yn,
    # Meta-parameters
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr,
    BLOCK_SIZE_N: tl.constexpr,
    BLOCK_SIZE_K: tl.constexpr,
    GROUP_SIZE_M: tl.constexpr,
):
    pid = tl.program_id(axis=0)
    num_pid_n = tl.cdiv(N, BLOCK_SIZE_N)
    num_pid_in_group = GROUP_SIZE_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_SIZE_M
    group_size_m = min(num_blocks_m - first_pid_m, GROUP_SIZE_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    num_tokens_post_padded = tl.load(num_tokens_post_padded_ptr)
    if pid_m * BLOCK_SIZE_M >= num_tokens_post_padded:
        return
    expert = tl.load(expert_ids_ptr + pid_m).to(tl.int64)
    offs_sorted = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_token = tl.load(sorted_token_ids_ptr + offs_sorted)
    token_mask = offs_token < num_valid
    offs_n = pid_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    n_mask = offs_n < N
    offs_k = tl.arange(0, BLOCK_SIZE_K)

    h_ptrs = h_ptr + offs_sorted[:, None].to(tl.int64) * stride_hm + offs_k[None, :] * stride_hk
    w_ptrs = w_down_ptr + expert * stride_we + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        k_mask = offs_k < K - k * BLOCK_SIZE_K
        # Padding rows of H were never written: mask them to zeros rather than read garbage.
        a = tl.load(h_ptrs, mask=token_mask[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if UPCAST_DOT:
            a, w = a.to(tl.float32), w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
        h_ptrs += BLOCK_SIZE_K * stride_hk
        w_ptrs += BLOCK_SIZE_K * stride_wk

    y_ptrs = y_ptr + offs_sorted[:, None].to(tl.int64) * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, round_to(acc, y_ptr.dtype.element_ty), mask=token_mask[:, None] & n_mask[None, :])


# ---- block-size configs -------------------------------------------------------------------------


def config_file_name(E: int, N: int, device_name: str, dtype: torch.dtype | None = None) -> str:
    """``E=64,N=896,device_name=NVIDIA_H200.json`` (+ ``,dtype=..`` for non-bf16 tunings)."""
    device_name = device_name.replace(" ", "_")
    suffix = "" if dtype in (None, torch.bfloat16) else f",dtype={str(dtype).removeprefix('torch.')}"
    return f"E={E},N={N},device_name={device_name}{suffix}.json"


@functools.lru_cache(maxsize=64)
def load_configs(
    E: int, N: int, device_name: str, dtype: torch.dtype | None = None
) -> dict[int, dict[str, int]] | None:
    """Tuned configs keyed by token count M, or None (logged) when no file exists for this shape."""
    path = CONFIG_DIR / config_file_name(E, N, device_name, dtype)
    if not path.is_file():
        logger.warning("no tuned moe_experts config %s; using default block sizes", path.name)
        return None
    raw = json.loads(path.read_text())
    out = {}
    for key, cfg in raw.items():
        if not key.isdigit():  # metadata such as "_tuned_with"
            continue
        missing = [k for k in CONFIG_KEYS if k not in cfg]
        if missing:
            raise ValueError(f"{path}: config for M={key} lacks {missing}")
        out[int(key)] = {k: int(cfg[k]) for k in CONFIG_KEYS}
    logger.info("using tuned moe_experts configs from %s (%d batch sizes)", path.name, len(out))
    return out


def default_config(M: int, E: int, top_k: int) -> dict[str, int]:
    """Untuned fallback: small row blocks when few tokens reach each expert (decode)."""
    if M * top_k <= 2 * E:
        return {
            "BLOCK_SIZE_M": 16,
            "BLOCK_SIZE_N": 64,
            "BLOCK_SIZE_K": 64,
            "GROUP_SIZE_M": 1,
            "num_warps": 4,
            "num_stages": 3,
        }
    return {
        "BLOCK_SIZE_M": 64,
        "BLOCK_SIZE_N": 64,
        "BLOCK_SIZE_K": 64,
        "GROUP_SIZE_M": 8,
        "num_warps": 4,
        "num_stages": 3,
    }


def get_config(
    M: int, E: int, N: int, top_k: int, dtype: torch.dtype, device: torch.device
) -> dict[str, int]:
    if device.type == "cuda":
        configs = load_configs(E, N, torch.cuda.get_device_name(device), dtype)
        if configs:
            return select_config(configs, M)
    return default_config(M, E, top_k)


def select_config(configs: dict[int, dict[str, int]], M: int) -> dict[str, int]:
    """The config tuned for the token count nearest to M."""
    return configs[min(configs, key=lambda m: abs(m - M))]


# ---- launcher -----------------------------------------------------------------------------------


def moe_experts_triton(
    x: torch.Tensor,
    w_gate: torch.Tensor,
    w_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    expert_counts: torch.Tensor | None = None,
    config: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Σ_j topk_weights[t, j] · Expert_{topk_ids[t, j]}(x[t]) for x [M, H]; weights stacked per expert.

    w_gate, w_up: [E, I, H]; w_down: [E, H, I] (each expert's nn.Linear weights stacked).
    """
    check_launchable(x, w_gate, w_up, w_down, topk_ids, topk_weights)
    _check_expert_args(x, w_gate, w_up, w_down, topk_ids, topk_weights)
    M, H = x.shape
    E, inter, _ = w_gate.shape
    top_k = topk_ids.shape[1]
    cfg = dict(config) if config is not None else get_config(M, E, inter, top_k, x.dtype, x.device)
    launch_opts = {} if interpreting() else {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
    BM, BN, BK, GM = cfg["BLOCK_SIZE_M"], cfg["BLOCK_SIZE_N"], cfg["BLOCK_SIZE_K"], cfg["GROUP_SIZE_M"]
    # fp32 activations (the embedded CPU-trained model) keep full precision rather than TF32.
    precision = "ieee" if x.dtype == torch.float32 else "tf32"
    if M == 0:
        return torch.empty_like(x)

    align = moe_align_triton(topk_ids, E, BM, expert_counts=expert_counts)
    P = align.sorted_token_ids.numel()
    num_blocks_m = align.expert_ids.numel()
    h = torch.empty((P, inter), dtype=x.dtype, device=x.device)
    grid_up = (num_blocks_m * triton.cdiv(inter, BN),)
    moe_gate_up_kernel[grid_up](
        x,
        w_gate,
        w_up,
        h,
        align.sorted_token_ids,
        align.expert_ids,
        align.num_tokens_post_padded,
        inter,
        H,
        align.num_assignments,
        num_blocks_m,
        x.stride(0),
        x.stride(1),
        w_gate.stride(0),
        w_gate.stride(1),
        w_gate.stride(2),
        h.stride(0),
        h.stride(1),
        TOP_K=top_k,
        DOT_PRECISION=precision,
        UPCAST_DOT=interpreting(),
        BLOCK_SIZE_M=BM,
        BLOCK_SIZE_N=BN,
        BLOCK_SIZE_K=BK,
        GROUP_SIZE_M=GM,
        **launch_opts,
    )
    y = torch.empty((P, H), dtype=x.dtype, device=x.device)
    grid_down = (num_blocks_m * triton.cdiv(H, BN),)
    moe_down_kernel[grid_down](
        h,
        w_down,
        y,
        align.sorted_token_ids,
        align.expert_ids,
        align.num_tokens_post_padded,
        H,
        inter,
        align.num_assignments,
        num_blocks_m,
        h.stride(0),
        h.stride(1),
        w_down.stride(0),
        w_down.stride(1),
        w_down.stride(2),
        y.stride(0),
        y.stride(1),
        DOT_PRECISION=precision,
        UPCAST_DOT=interpreting(),
        BLOCK_SIZE_M=BM,
        BLOCK_SIZE_N=BN,
        BLOCK_SIZE_K=BK,
        GROUP_SIZE_M=GM,
        **launch_opts,
    )
    return moe_combine_triton(y, align.inv_positions, topk_weights, out_dtype=x.dtype)


def _check_expert_args(
    x: torch.Tensor,
    w_gate: torch.Tensor,
    w_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must be [M, H], got {tuple(x.shape)}")
    M, H = x.shape
    if w_gate.dim() != 3 or w_gate.shape[2] != H or w_up.shape != w_gate.shape:
        raise ValueError(
            f"w_gate {tuple(w_gate.shape)} / w_up {tuple(w_up.shape)} must both be [E, I, H={H}]"
        )
    E, inter, _ = w_gate.shape
    if w_down.shape != (E, H, inter):
        raise ValueError(f"w_down {tuple(w_down.shape)} must be [E={E}, H={H}, I={inter}]")
    if topk_ids.dim() != 2 or topk_ids.shape[0] != M or topk_weights.shape != topk_ids.shape:
        raise ValueError(
            f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} must be [M={M}, K]"
        )
    dtypes = {x.dtype, w_gate.dtype, w_up.dtype, w_down.dtype}
    if len(dtypes) != 1 or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(
            f"x and expert weights need one dtype of fp32/fp16/bf16, got {sorted(map(str, dtypes))}"
        )
    for name, t in (("w_gate", w_gate), ("w_up", w_up), ("w_down", w_down)):
        if t.stride(2) != 1:
            raise ValueError(f"{name} must be contiguous along its last dim, strides {t.stride()}")


def moe_experts_ref(
    x: torch.Tensor,
    w_gate: torch.Tensor,
    w_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
) -> torch.Tensor:
    """DeepSeek-V2 ``moe_infer``: each expert's Linear layers in the activation dtype on its tokens,
    then the fp32 weighted sum over each token's picks, cast back."""
    _check_expert_args(x, w_gate, w_up, w_down, topk_ids, topk_weights)
    M, K = topk_ids.shape
    flat = topk_ids.reshape(-1).long()
    rows = x.repeat_interleave(K, dim=0)  # [M*K, H], assignment order
    y = torch.empty((M * K, x.shape[1]), dtype=x.dtype, device=x.device)
    for e in torch.unique(flat).tolist():
        sel = flat == e
        xe = rows[sel]
        he = torch.nn.functional.silu(xe @ w_gate[e].t()) * (xe @ w_up[e].t())
        y[sel] = he @ w_down[e].t()
    out = y.view(M, K, -1).to(topk_weights.dtype).mul_(topk_weights.unsqueeze(-1)).sum(dim=1)
    return out.to(x.dtype)


def moe_experts_modules_ref(
    x: torch.Tensor, experts: Any, topk_ids: torch.Tensor, topk_weights: torch.Tensor
) -> torch.Tensor:
    """The same sum with each expert's own module (``ocrstream.model.moe_decoder``'s loop, op for op):
    assignments sorted by expert, each expert run on its tokens in the activation dtype, products
    with the weights accumulated per token in fp32 in expert order, cast once.

    One gather in and one scatter-add out for all experts (``index_add_`` adds in index order, so
    each token still sums its experts in expert order): at decode sizes the per-expert small ops,
    not the GEMMs, were most of the time."""
    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float32, device=x.device)
    if x.shape[0] == 0:
        return out.to(x.dtype)
    flat_idx = topk_ids.reshape(-1).long()
    order = torch.argsort(flat_idx, stable=True)  # by expert; tokens ascending within each
    counts = torch.bincount(flat_idx, minlength=len(experts)).tolist()
    toks = order // topk_ids.shape[1]  # the token of each sorted assignment
    ys = [experts[e](part) for e, part in enumerate(x[toks].split(counts)) if counts[e]]
    out.index_add_(0, toks, torch.cat(ys).float() * topk_weights.reshape(-1)[order, None])
    return out.to(x.dtype)
