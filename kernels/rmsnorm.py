"""Fused residual add + RMSNorm (DeepSeek-V2 / Llama ``RMSNorm``, deepseek-ocr.md §9).

The decoder computes, per row of ``x`` [M, N]:

    h = x + residual                      (in the activation dtype, when a residual is given)
    y = weight * (h.float() * rsqrt(mean(h.float()**2) + eps)).to(x.dtype)

The kernel does one row block per program: load, add, reduce in fp32, scale, store ``y`` and the
new residual ``h`` in one pass over memory (the unfused version reads ``h`` twice and writes it once
more). Roundings follow the reference step by step, so fp32 matches to the last bits and bf16/fp16
within one ulp of the output dtype.
"""

from __future__ import annotations

import torch

from ocrstream.kernels._compat import check_launchable, next_power_of_2, round_to, tl, triton


@triton.jit
def rmsnorm_kernel(
    # Pointers
    x_ptr,
    residual_ptr,
    weight_ptr,
    out_ptr,
    residual_out_ptr,
    # Dimensions: M rows of N features
    M,
    N,
    # Strides: elements to step to the next row (the feature dim is contiguous)
    stride_xm,
    stride_rm,
    stride_om,
    stride_rom,
    eps,
    # Meta-parameters
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr,
    BLOCK_SIZE_N: tl.constexpr,
):
    pid_m = tl.program_id(axis=0)
    offs_m = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_n = tl.arange(0, BLOCK_SIZE_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    mask = m_mask[:, None] & n_mask[None, :]

    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_n[None, :]
    x = tl.load(x_ptrs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r_ptrs = residual_ptr + offs_m[:, None] * stride_rm + offs_n[None, :]
        r = tl.load(r_ptrs, mask=mask, other=0.0)
        # torch adds in the activation dtype: exact fp32 sum, one rounding.
        h = round_to(x.to(tl.float32) + r.to(tl.float32), x.dtype)
        ro_ptrs = residual_out_ptr + offs_m[:, None] * stride_rom + offs_n[None, :]
        tl.store(ro_ptrs, h, mask=mask)
    else:
        h = x
    hf = h.to(tl.float32)
    var = tl.sum(hf * hf, axis=1) / N  # masked lanes hold 0 and do not bias the mean
    rstd = tl.rsqrt(var + eps)
    normed = round_to(hf * rstd[:, None], x.dtype)  # the reference casts back before the weight
    w = tl.load(weight_ptr + offs_n, mask=n_mask, other=0.0)
    y = normed.to(tl.float32) * w.to(tl.float32)
    o_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(o_ptrs, round_to(y, out_ptr.dtype.element_ty), mask=mask)


def rmsnorm_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    block_size_m: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RMSNorm of ``x`` [..., N] (after adding ``residual``); returns (normed, new residual or None)."""
    check_launchable(x, weight, *([] if residual is None else [residual]))
    N = x.shape[-1]
    if weight.shape != (N,):
        raise ValueError(f"weight shape {tuple(weight.shape)} != ({N},) for x {tuple(x.shape)}")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(
            f"residual {tuple(residual.shape)} {residual.dtype} must match x {tuple(x.shape)} {x.dtype}"
        )
    if x.stride(-1) != 1 or not weight.is_contiguous():
        raise ValueError(f"feature dim must be contiguous: x strides {x.stride()}, weight {weight.stride()}")
    x2 = x.reshape(-1, N)  # [M, N]; a view for the usual contiguous activations
    M = x2.shape[0]
    out_dtype = torch.result_type(weight, x)  # weight * normed promotes like torch does
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    if residual is not None:
        r2 = residual.reshape(-1, N)
        res_out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    else:
        r2, res_out = x2, out  # unused (HAS_RESIDUAL is false); any valid pointer will do
    BLOCK_SIZE_N = next_power_of_2(N)
    if block_size_m is None:
        # ~8K elements per program keeps registers in check on GPU; never more rows than exist.
        block_size_m = max(1, min(next_power_of_2(M), 8192 // BLOCK_SIZE_N))
    num_warps = 4 if BLOCK_SIZE_N * block_size_m <= 4096 else 8
    grid = (triton.cdiv(M, block_size_m),)
    rmsnorm_kernel[grid](
        x2,
        r2,
        weight,
        out,
        res_out,
        M,
        N,
        x2.stride(0),
        r2.stride(0),
        out.stride(0),
        res_out.stride(0),
        float(eps),
        HAS_RESIDUAL=residual is not None,
        BLOCK_SIZE_M=block_size_m,
        BLOCK_SIZE_N=BLOCK_SIZE_N,
        num_warps=num_warps,
    )
    out = out.view(x.shape)
    return out, (res_out.view(x.shape) if residual is not None else None)


def rmsnorm_ref(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The decoder's RMSNorm exactly as written in DeepSeek-V2 (fp32 statistics, cast, then weight)."""
    if residual is not None:
        x = x + residual
        residual = x
    input_dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(input_dtype), residual
