"""Fused residual + RMSNorm kernel vs the decoder's RMSNorm."""

import pytest
import torch

from ocrstream.kernels.rmsnorm import rmsnorm_ref, rmsnorm_triton

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize(
    "shape", [(37, 96), (2, 19, 64)]
)  # rows not a multiple of the block; N not a power of 2
def test_rmsnorm_matches_reference(device, seed, poison, tol, dtype, with_residual, shape):
    x = torch.randn(shape, dtype=dtype, device=device) * 3
    weight = (1 + 0.5 * torch.randn(shape[-1], device=device)).to(dtype)
    residual = torch.randn(shape, dtype=dtype, device=device) if with_residual else None
    out, new_res = rmsnorm_triton(x, weight, 1e-6, residual=residual, block_size_m=16)
    ref, ref_res = rmsnorm_ref(x, weight, 1e-6, residual=residual)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert not out.isnan().any(), "unwritten output elements"
    torch.testing.assert_close(out, ref, **tol.elementwise(dtype))
    if with_residual:
        # One rounding of an exact fp32 sum on both sides: bit-identical.
        assert torch.equal(new_res, ref_res)
    else:
        assert new_res is None


def test_rmsnorm_fp32_weight_promotes(device, seed, poison):
    # The model keeps fp32 norm weights; weight * normed.to(bf16) promotes to fp32 in torch.
    x = torch.randn(20, 64, dtype=torch.bfloat16, device=device)
    weight = torch.randn(64, device=device)
    out, _ = rmsnorm_triton(x, weight, 1e-6, block_size_m=32)
    ref, _ = rmsnorm_ref(x, weight, 1e-6)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def test_rmsnorm_rejects_bad_shapes(device):
    x = torch.randn(4, 64, device=device)
    with pytest.raises(ValueError, match=r"weight shape \(32,\)"):
        rmsnorm_triton(x, torch.ones(32, device=device), 1e-6)
    with pytest.raises(ValueError, match="residual"):
        rmsnorm_triton(x, torch.ones(64, device=device), 1e-6, residual=torch.randn(4, 32, device=device))
