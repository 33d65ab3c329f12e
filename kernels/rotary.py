"""Rotary position embedding, rotate-half (NeoX / Llama) pairing, applied to q and k.

For a head vector x of size D = 2·R (R = D/2) and per-position tables cos, sin of size D
(``cos = cat(cos_freqs, cos_freqs)`` as Llama builds them):

    out[:R] = x[:R]·cos[:R] − x[R:]·sin[:R]
    out[R:] = x[R:]·cos[R:] + x[:R]·sin[R:]

which is ``x·cos + rotate_half(x)·sin`` (deepseek-ocr.md §9: Llama rotary over the full 128-d head).
The reference casts cos/sin to the activation dtype and rounds each product and the sum there;
the kernel repeats those roundings so low-precision results agree to one ulp.
"""

from __future__ import annotations

import torch

from ocrstream.kernels._compat import check_launchable, next_power_of_2, round_to, tl, triton


@triton.jit
def rotary_kernel(
    # Pointers
    x_ptr,
    cos_ptr,
    sin_ptr,
    out_ptr,
    # Dimensions: x is [B, H, T, D] viewed through strides; R = D // 2
    H,
    T,
    R,
    # Strides (elements per step along each dim; the head dim is contiguous everywhere)
    stride_xb,
    stride_xh,
    stride_xt,
    stride_cb,  # 0 when one table serves every batch row
    stride_ct,
    stride_ob,
    stride_oh,
    stride_ot,
    # Meta-parameters
    BLOCK_SIZE_T: tl.constexpr,
    BLOCK_SIZE_R: tl.constexpr,
):
    pid_bh = tl.program_id(axis=0)
    pid_t = tl.program_id(axis=1)
    b = pid_bh // H
    h = pid_bh % H
    offs_t = pid_t * BLOCK_SIZE_T + tl.arange(0, BLOCK_SIZE_T)
    offs_r = tl.arange(0, BLOCK_SIZE_R)
    mask = (offs_t < T)[:, None] & (offs_r < R)[None, :]

    x_ptrs = x_ptr + b * stride_xb + h * stride_xh + offs_t[:, None] * stride_xt + offs_r[None, :]
    c_ptrs = cos_ptr + b * stride_cb + offs_t[:, None] * stride_ct + offs_r[None, :]
    s_ptrs = sin_ptr + b * stride_cb + offs_t[:, None] * stride_ct + offs_r[None, :]
    x1 = tl.load(x_ptrs, mask=mask, other=0.0)
    x2 = tl.load(x_ptrs + R, mask=mask, other=0.0)
    dt = x1.dtype
    # Tables rounded to the activation dtype first, as the reference does.
    c1 = round_to(tl.load(c_ptrs, mask=mask, other=0.0).to(tl.float32), dt).to(tl.float32)
    c2 = round_to(tl.load(c_ptrs + R, mask=mask, other=0.0).to(tl.float32), dt).to(tl.float32)
    s1 = round_to(tl.load(s_ptrs, mask=mask, other=0.0).to(tl.float32), dt).to(tl.float32)
    s2 = round_to(tl.load(s_ptrs + R, mask=mask, other=0.0).to(tl.float32), dt).to(tl.float32)
    x1f = x1.to(tl.float32)
    x2f = x2.to(tl.float32)
    # Each product and the sum rounded to the activation dtype (a no-op for fp32).
    o1 = round_to(round_to(x1f * c1, dt).to(tl.float32) + round_to(-x2f * s1, dt).to(tl.float32), dt)
    o2 = round_to(round_to(x2f * c2, dt).to(tl.float32) + round_to(x1f * s2, dt).to(tl.float32), dt)

    o_ptrs = out_ptr + b * stride_ob + h * stride_oh + offs_t[:, None] * stride_ot + offs_r[None, :]
    tl.store(o_ptrs, o1, mask=mask)
    tl.store(o_ptrs + R, o2, mask=mask)


def _table_view(tab: torch.Tensor, B: int, T: int, D: int, name: str) -> tuple[torch.Tensor, int, int]:
    """cos/sin as [T, D], [B, T, D] or [B, 1, T, D] -> (tensor, batch stride, position stride)."""
    if tab.dim() == 4 and tab.shape[1] == 1:
        tab = tab[:, 0]
    if tab.dim() == 2 and tab.shape == (T, D):
        return tab, 0, tab.stride(0)
    if tab.dim() == 3 and tab.shape[1:] == (T, D) and tab.shape[0] in (1, B):
        return tab, (0 if tab.shape[0] == 1 else tab.stride(0)), tab.stride(1)
    raise ValueError(f"{name} shape {tuple(tab.shape)} does not fit [T, D]=[{T}, {D}] or [B={B}, T, D]")


def _rotary_one(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, block_size_t: int | None
) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"expected [B, H, T, D], got shape {tuple(x.shape)}")
    B, H, T, D = x.shape
    if D % 2:
        raise ValueError(f"head dim {D} must be even for rotate-half rotary")
    if x.stride(-1) != 1:
        raise ValueError(f"head dim must be contiguous, strides {x.stride()}")
    cos, stride_cb, stride_ct = _table_view(cos, B, T, D, "cos")
    sin, stride_sb, stride_st = _table_view(sin, B, T, D, "sin")
    if (stride_cb, stride_ct) != (stride_sb, stride_st) or cos.stride(-1) != 1 or sin.stride(-1) != 1:
        raise ValueError(
            f"cos strides {cos.stride()} and sin strides {sin.stride()} must agree, last dim contiguous"
        )
    out = torch.empty_like(x)  # keeps x's layout ([B, H, T, D] or a [B, T, H, D] transpose)
    R = D // 2
    BLOCK_SIZE_R = next_power_of_2(R)
    if block_size_t is None:
        block_size_t = max(1, min(next_power_of_2(T), 4096 // BLOCK_SIZE_R))
    grid = (B * H, triton.cdiv(T, block_size_t))
    rotary_kernel[grid](
        x,
        cos,
        sin,
        out,
        H,
        T,
        R,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        stride_cb,
        stride_ct,
        out.stride(0),
        out.stride(1),
        out.stride(2),
        BLOCK_SIZE_T=block_size_t,
        BLOCK_SIZE_R=BLOCK_SIZE_R,
    )
    return out


def rotary_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    block_size_t: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [B, Hq, T, D] and k [B, Hk, T, D]; cos/sin [T, D], [B, T, D] or [B, 1, T, D]."""
    check_launchable(q, k, cos, sin)
    if q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} differ outside the head count")
    # Two launches of one kernel: q and k may differ in head count (GQA) and layout.
    return _rotary_one(q, cos, sin, block_size_t), _rotary_one(k, cos, sin, block_size_t)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def rotary_ref(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Llama ``apply_rotary_pos_emb`` with rotate-half; cos/sin broadcast over heads."""
    if cos.dim() == 3:  # [B, T, D] -> [B, 1, T, D]
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    cos_q, sin_q = cos.to(q.dtype), sin.to(q.dtype)
    cos_k, sin_k = cos.to(k.dtype), sin.to(k.dtype)
    return q * cos_q + _rotate_half(q) * sin_q, k * cos_k + _rotate_half(k) * sin_k
