"""Flash-style attention with SAM's decomposed rel-pos bias vs SDPA with the materialised mask."""

import pytest
import torch

from ocrstream.kernels.window_attention import window_attention_ref, window_attention_triton


def _inputs(B, H, kh, kw, D, dtype, device):
    L = kh * kw
    q, k, v = (torch.randn(B, H, L, D, device=device).to(dtype) for _ in range(3))
    # Window padding tokens are real zeros in SAM (unmasked keys): zero the last row of the grid.
    k[:, :, -kw:] = 0
    v[:, :, -kw:] = 0
    rel_h = torch.randn(B, H, L, kh, device=device).to(dtype)
    rel_w = torch.randn(B, H, L, kw, device=device).to(dtype)
    return q, k, v, rel_h, rel_w


def _tol(dtype):
    # fp32: online softmax vs one-shot softmax, a few ulps. bf16/fp16: P is rounded to the input
    # dtype before P·V (flash attention does the same), ~1 ulp relative per weight.
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("grid_hw", [(14, 14), (5, 7)])  # SAM's 14x14 window; a non-square one
def test_window_attention_matches_sdpa(device, seed, poison, dtype, grid_hw):
    q, k, v, rel_h, rel_w = _inputs(2, 2, *grid_hw, 32, dtype, device)
    out = window_attention_triton(q, k, v, rel_h, rel_w, block_size_m=64, block_size_n=64)
    # Reference in fp32 on the same (rounded) inputs: what the kernel's fp32 math should produce.
    ref = window_attention_ref(q.float(), k.float(), v.float(), rel_h.float(), rel_w.float())
    assert out.dtype == dtype
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), ref, **_tol(dtype))


def test_window_attention_without_bias_and_custom_scale(device, seed, poison):
    q, k, v, _, _ = _inputs(1, 3, 6, 6, 16, torch.float32, device)
    out = window_attention_triton(q, k, v, None, None, scale=0.3, block_size_m=32, block_size_n=16)
    ref = window_attention_ref(q, k, v, None, None, scale=0.3)
    torch.testing.assert_close(out, ref, **_tol(torch.float32))


def test_window_attention_rejects_bad_bias(device):
    q = torch.randn(1, 1, 12, 16, device=device)
    with pytest.raises(ValueError, match="KH\\*KW == L"):
        window_attention_triton(
            q, q, q, torch.randn(1, 1, 12, 3, device=device), torch.randn(1, 1, 12, 3, device=device)
        )
    with pytest.raises(ValueError, match="both"):
        window_attention_ref(q, q, q, torch.randn(1, 1, 12, 3, device=device), None)
