"""Flash-style attention with SAM's decomposed relative-position bias (deepseek-ocr.md §2).

SAM blocks (windowed: L = 14·14 tokens per window, zero-padded windows unmasked; global: the whole
grid) call ``scaled_dot_product_attention(q, k, v, attn_mask=bias)`` with the default scale 1/√D and

    bias[b, h, i, j] = rel_h[b, h, i, j // KW] + rel_w[b, h, i, j % KW]      (key j = (jh, jw))

where rel_h [B, H, L, KH] and rel_w [B, H, L, KW] are the einsums of the unscaled q with the
rel-pos tables. The unfused path materialises the [L, L] bias per head (for a 64×64 global block
that is 16.7M elements per head, written and read once); this kernel gathers the two small tables
per tile instead and runs an online softmax over key blocks in fp32, so the bias never exists in
memory. All keys are real (window padding tokens are genuine zero tokens), so only the block tail
past L is masked.
"""

from __future__ import annotations

import math

import torch

from ocrstream.kernels._compat import check_launchable, interpreting, next_power_of_2, round_to, tl, triton


@triton.jit
def window_attention_kernel(
    # Pointers
    q_ptr,
    k_ptr,
    v_ptr,
    rel_h_ptr,
    rel_w_ptr,
    out_ptr,
    # Dimensions: [B, H, L, D] tensors; keys form a KH x KW grid (L = KH * KW)
    H,
    L,
    D,
    KH,
    KW,
    sm_scale,
    # Strides: elements per step along (batch, head, token); the last dim is contiguous
    stride_qb,
    stride_qh,
    stride_ql,
    stride_kb,
    stride_kh,
    stride_kl,
    stride_vb,
    stride_vh,
    stride_vl,
    stride_rhb,
    stride_rhh,
    stride_rhl,
    stride_rwb,
    stride_rwh,
    stride_rwl,
    stride_ob,
    stride_oh,
    stride_ol,
    # Meta-parameters
    HAS_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_SIZE_M: tl.constexpr,
    BLOCK_SIZE_N: tl.constexpr,
    BLOCK_SIZE_D: tl.constexpr,
):
    pid_m = tl.program_id(axis=0)
    pid_bh = tl.program_id(axis=1)
    b = pid_bh // H
    h = pid_bh % H
    offs_m = pid_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    offs_d = tl.arange(0, BLOCK_SIZE_D)
    m_mask = offs_m < L
    d_mask = offs_d < D

    q_ptrs = q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_ql + offs_d[None, :]
    q = tl.load(q_ptrs, mask=m_mask[:, None] & d_mask[None, :], other=0.0)
    if UPCAST_DOT:
        q = q.to(tl.float32)

    m_i = tl.full((BLOCK_SIZE_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_SIZE_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_D), dtype=tl.float32)
    for start_n in range(0, L, BLOCK_SIZE_N):
        offs_n = start_n + tl.arange(0, BLOCK_SIZE_N)
        n_mask = offs_n < L
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k_ptrs = k_ptr + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kl + offs_d[None, :]
        v_ptrs = v_ptr + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vl + offs_d[None, :]
        k = tl.load(k_ptrs, mask=kv_mask, other=0.0)
        v = tl.load(v_ptrs, mask=kv_mask, other=0.0)
        if UPCAST_DOT:  # the CPU interpreter multiplies bf16 as raw integers; fp32 is exact there
            k, v = k.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * sm_scale  # [BLOCK_SIZE_M, BLOCK_SIZE_N]
        if HAS_BIAS:
            bias_mask = m_mask[:, None] & n_mask[None, :]
            rh_ptrs = (
                rel_h_ptr
                + b * stride_rhb
                + h * stride_rhh
                + offs_m[:, None] * stride_rhl
                + (offs_n // KW)[None, :]
            )
            rw_ptrs = (
                rel_w_ptr
                + b * stride_rwb
                + h * stride_rwh
                + offs_m[:, None] * stride_rwl
                + (offs_n % KW)[None, :]
            )
            s += tl.load(rh_ptrs, mask=bias_mask, other=0.0).to(tl.float32)
            s += tl.load(rw_ptrs, mask=bias_mask, other=0.0).to(tl.float32)
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        p_v = round_to(p, v_ptr.dtype.element_ty)  # P·V in the input dtype, as flash attention does
        if UPCAST_DOT:
            p_v = p_v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p_v, v, input_precision=DOT_PRECISION)
        m_i = m_new
    out = acc / l_i[:, None]
    o_ptrs = out_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ol + offs_d[None, :]
    tl.store(o_ptrs, round_to(out, out_ptr.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])


def window_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    scale: float | None = None,
    block_size_m: int | None = None,
    block_size_n: int | None = None,
) -> torch.Tensor:
    """softmax(q·kᵀ·scale + bias)·v for q, k, v [B, H, L, D]; bias from rel_h [B, H, L, KH], rel_w [B, H, L, KW]."""
    tensors = [q, k, v] + ([rel_h, rel_w] if rel_h is not None else [])
    check_launchable(*tensors)
    B, H, L, D = _check_attention_args(q, k, v, rel_h, rel_w)
    for name, t in (("q", q), ("k", k), ("v", v), ("rel_h", rel_h), ("rel_w", rel_w)):
        if t is not None and t.stride(-1) != 1:
            raise ValueError(f"{name} must be contiguous along its last dim, strides {t.stride()}")
    has_bias = rel_h is not None
    KH, KW = (rel_h.shape[-1], rel_w.shape[-1]) if has_bias else (1, L)
    sm_scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    out = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)  # contiguous, like SDPA's output
    BLOCK_SIZE_D = max(16, next_power_of_2(D))
    BLOCK_SIZE_M = block_size_m or 64
    BLOCK_SIZE_N = block_size_n or 64
    rh = rel_h if has_bias else q  # unused when HAS_BIAS is false
    rw = rel_w if has_bias else q
    grid = (triton.cdiv(L, BLOCK_SIZE_M), B * H)
    window_attention_kernel[grid](
        q,
        k,
        v,
        rh,
        rw,
        out,
        H,
        L,
        D,
        KH,
        KW,
        sm_scale,
        q.stride(0),
        q.stride(1),
        q.stride(2),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        v.stride(0),
        v.stride(1),
        v.stride(2),
        rh.stride(0),
        rh.stride(1),
        rh.stride(2),
        rw.stride(0),
        rw.stride(1),
        rw.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        HAS_BIAS=has_bias,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        UPCAST_DOT=interpreting(),
        BLOCK_SIZE_M=BLOCK_SIZE_M,
        BLOCK_SIZE_N=BLOCK_SIZE_N,
        BLOCK_SIZE_D=BLOCK_SIZE_D,
    )
    return out


def _check_attention_args(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor | None, rel_w: torch.Tensor | None
) -> tuple[int, int, int, int]:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} must all be [B, H, L, D]"
        )
    B, H, L, D = q.shape
    if (rel_h is None) != (rel_w is None):
        raise ValueError("give both rel_h and rel_w, or neither")
    if rel_h is not None:
        KH, KW = rel_h.shape[-1], rel_w.shape[-1]
        if rel_h.shape != (B, H, L, KH) or rel_w.shape != (B, H, L, KW) or KH * KW != L:
            raise ValueError(
                f"rel_h {tuple(rel_h.shape)} / rel_w {tuple(rel_w.shape)} must be [B, H, L={L}, KH] / "
                f"[B, H, L, KW] with KH*KW == L"
            )
    return B, H, L, D


def window_attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    scale: float | None = None,
) -> torch.Tensor:
    """SAM's SDPA call: the decomposed bias broadcast to [B, H, L, L] as an additive mask."""
    B, H, L, _ = _check_attention_args(q, k, v, rel_h, rel_w)
    mask = None
    if rel_h is not None:
        KH, KW = rel_h.shape[-1], rel_w.shape[-1]
        mask = (rel_h[..., :, None] + rel_w[..., None, :]).view(B, H, L, KH * KW)  # [B, H, L, L]
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
