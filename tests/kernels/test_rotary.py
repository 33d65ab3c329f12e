"""Rotate-half rotary kernel vs Llama's apply_rotary_pos_emb."""

import pytest
import torch

from ocrstream.kernels.rotary import rotary_ref, rotary_triton


def _cos_sin(positions, head_dim, dtype, theta=10000.0):
    """Llama-style tables: positions [B, T] -> [B, 1, T, D]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head_dim", [64, 48])  # 48: half width 24 is not a power of two
def test_rotary_matches_reference(device, seed, poison, tol, dtype, head_dim):
    B, T, Hq, Hk = 2, 13, 4, 2  # T=13 is not a multiple of the 8-row block
    # q as the model builds it: a [B, T, H, D] projection viewed as [B, H, T, D] (non-contiguous).
    q = torch.randn(B, T, Hq, head_dim, dtype=dtype, device=device).transpose(1, 2)
    k = torch.randn(B, Hk, T, head_dim, dtype=dtype, device=device)
    positions = torch.randint(0, 4000, (B, T), device=device)
    cos, sin = _cos_sin(positions, head_dim, dtype)
    oq, ok = rotary_triton(q, k, cos, sin, block_size_t=8)
    rq, rk = rotary_ref(q, k, cos, sin)
    assert oq.stride() == q.stride(), "output keeps the input layout"
    assert not oq.isnan().any() and not ok.isnan().any()
    torch.testing.assert_close(oq, rq, **tol.elementwise(dtype))
    torch.testing.assert_close(ok, rk, **tol.elementwise(dtype))


def test_rotary_shared_table_and_fp32_tables(device, seed, poison, tol):
    # One [T, D] fp32 table for the whole batch, bf16 activations: tables are rounded first.
    T, D = 10, 32
    q = torch.randn(3, 2, T, D, dtype=torch.bfloat16, device=device)
    k = torch.randn(3, 2, T, D, dtype=torch.bfloat16, device=device)
    cos, sin = _cos_sin(torch.arange(T, device=device)[None], D, torch.float32)
    cos, sin = cos[0, 0], sin[0, 0]  # [T, D]
    oq, ok = rotary_triton(q, k, cos, sin)
    rq, rk = rotary_ref(q, k, cos, sin)
    torch.testing.assert_close(oq, rq, **tol.elementwise(torch.bfloat16))
    torch.testing.assert_close(ok, rk, **tol.elementwise(torch.bfloat16))


def test_rotary_rejects_mismatch(device):
    q = torch.randn(1, 2, 5, 16, device=device)
    cos = torch.randn(6, 16, device=device)
    with pytest.raises(ValueError, match=r"cos shape \(6, 16\)"):
        rotary_triton(q, q, cos, cos)
    with pytest.raises(ValueError, match="even"):
        rotary_triton(q[..., :15], q[..., :15], cos[:5, :15], cos[:5, :15])
