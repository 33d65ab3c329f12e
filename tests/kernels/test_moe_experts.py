"""Fused expert MLP (align -> gate/up GEMM + SiLU -> down GEMM -> combine) vs DeepSeek-V2 moe_infer."""

import json
import logging

import pytest
import torch

from ocrstream.kernels import moe_experts
from ocrstream.kernels.moe_experts import moe_experts_ref, moe_experts_triton

# Large blocks keep the interpreter to a few dozen programs (cpu-runtime-notes §2); BLOCK_SIZE_N=32
# against inter=48 leaves a masked column tail, K=64/H=80 a masked reduction tail.
CFG = {
    "BLOCK_SIZE_M": 32,
    "BLOCK_SIZE_N": 32,
    "BLOCK_SIZE_K": 64,
    "GROUP_SIZE_M": 4,
    "num_warps": 4,
    "num_stages": 2,
}


def _weights(E, inter, H, dtype, device):
    # Scaled so activations stay O(1) through both GEMMs.
    w_gate = (torch.randn(E, inter, H, device=device) / H**0.5).to(dtype)
    w_up = (torch.randn(E, inter, H, device=device) / H**0.5).to(dtype)
    w_down = (torch.randn(E, H, inter, device=device) / inter**0.5).to(dtype)
    return w_gate, w_up, w_down


def _routing(case, M, E, K, device):
    if case == "random":  # experts E-1 and E-2 get no tokens
        ids = torch.stack([torch.randperm(E - 2, device=device)[:K] for _ in range(M)])
    elif case == "one_expert":
        ids = torch.full((M, K), 2, device=device)
    else:
        raise AssertionError(case)
    weights = torch.rand(M, K, device=device)
    return ids.to(torch.int32), weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case,K", [("random", 6), ("random", 1), ("one_expert", 1)])
def test_experts_match_reference(device, seed, poison, tol, dtype, case, K):
    M, H, inter, E = 37, 80, 48, 8  # 37*K assignments: never a multiple of the 32-row block
    x = torch.randn(M, H, device=device).to(dtype)
    w_gate, w_up, w_down = _weights(E, inter, H, dtype, device)
    ids, weights = _routing(case, M, E, K, device)
    out = moe_experts_triton(x, w_gate, w_up, w_down, ids, weights, config=CFG)
    ref = moe_experts_ref(x, w_gate, w_up, w_down, ids, weights)
    assert out.dtype == dtype and out.shape == (M, H)
    assert not out.isnan().any(), "unwritten or padding rows leaked into the output"
    torch.testing.assert_close(out, ref, **tol.gemm(dtype, ref.abs().max().item()))


def test_experts_with_router_counts(device, seed, poison, tol):
    # The router's per-expert counts skip the histogram pass and must give the same result.
    M, H, inter, E, K = 20, 64, 32, 8, 2
    x = torch.randn(M, H, device=device)
    w_gate, w_up, w_down = _weights(E, inter, H, torch.float32, device)
    ids, weights = _routing("random", M, E, K, device)
    counts = torch.bincount(ids.flatten().long(), minlength=E).to(torch.int32)
    out = moe_experts_triton(x, w_gate, w_up, w_down, ids, weights, expert_counts=counts, config=CFG)
    ref = moe_experts_ref(x, w_gate, w_up, w_down, ids, weights)
    torch.testing.assert_close(out, ref, **tol.gemm(torch.float32, ref.abs().max().item()))


def test_experts_reject_bad_shapes(device):
    x = torch.randn(4, 16, device=device)
    wg = torch.randn(2, 8, 16, device=device)
    ids = torch.zeros(4, 1, dtype=torch.int32, device=device)
    w = torch.ones(4, 1, device=device)
    with pytest.raises(ValueError, match=r"w_down \(2, 8, 16\) must be \[E=2, H=16, I=8\]"):
        moe_experts_triton(x, wg, wg, wg, ids, w, config=CFG)
    with pytest.raises(ValueError, match="one dtype"):
        moe_experts_ref(x.half(), wg, wg, wg.transpose(1, 2), ids, w)


def test_config_file_lookup_and_fallback(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(moe_experts, "CONFIG_DIR", tmp_path)
    moe_experts.load_configs.cache_clear()
    name = moe_experts.config_file_name(64, 896, "NVIDIA H200")
    assert name == "E=64,N=896,device_name=NVIDIA_H200.json"
    assert moe_experts.config_file_name(64, 896, "NVIDIA H200", torch.float16).endswith(",dtype=float16.json")
    with caplog.at_level(logging.WARNING, logger="ocrstream.kernels.moe_experts"):
        assert moe_experts.load_configs(64, 896, "NVIDIA H200") is None
    assert "no tuned moe_experts config E=64,N=896" in caplog.text

    small = {
        "BLOCK_SIZE_M": 16,
        "BLOCK_SIZE_N": 64,
        "BLOCK_SIZE_K": 128,
        "GROUP_SIZE_M": 1,
        "num_warps": 4,
        "num_stages": 4,
    }
    big = {
        "BLOCK_SIZE_M": 128,
        "BLOCK_SIZE_N": 128,
        "BLOCK_SIZE_K": 64,
        "GROUP_SIZE_M": 8,
        "num_warps": 8,
        "num_stages": 3,
    }
    (tmp_path / name).write_text(json.dumps({"_tuned_with": "test", "1": small, "1024": big}))
    moe_experts.load_configs.cache_clear()
    configs = moe_experts.load_configs(64, 896, "NVIDIA H200")
    assert moe_experts.select_config(configs, 4) == small
    assert moe_experts.select_config(configs, 700) == big
    (tmp_path / name).write_text(json.dumps({"8": {"BLOCK_SIZE_M": 16}}))
    moe_experts.load_configs.cache_clear()
    with pytest.raises(ValueError, match="lacks"):
        moe_experts.load_configs(64, 896, "NVIDIA H200")
    moe_experts.load_configs.cache_clear()
