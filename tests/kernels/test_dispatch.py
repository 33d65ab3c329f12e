"""Backend selection: env setting, auto rules, forward-only guard, and life without triton."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from ocrstream.kernels import dispatch, moe_experts, rmsnorm


@pytest.fixture
def calls(monkeypatch):
    """Record which implementation the dispatcher picked for rms_norm."""
    seen = []
    for name in ("rmsnorm_triton", "rmsnorm_ref"):
        real = getattr(rmsnorm, name)

        def spy(*a, _real=real, _name=name, **kw):
            seen.append(_name)
            return _real(*a, **kw)

        monkeypatch.setattr(rmsnorm, name, spy)
    return seen


def test_backend_setting(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert dispatch.backend() == "auto"
    monkeypatch.setenv(dispatch.ENV_VAR, " Triton ")
    assert dispatch.backend() == "triton"
    monkeypatch.setenv(dispatch.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="OCRSTREAM_KERNELS='cuda'"):
        dispatch.backend()


@pytest.mark.parametrize("setting,expected", [("torch", "rmsnorm_ref"), ("triton", "rmsnorm_triton")])
def test_forced_backends(monkeypatch, calls, seed, setting, expected):
    monkeypatch.setenv(dispatch.ENV_VAR, setting)
    x, w = torch.randn(5, 32), torch.randn(32)
    out = dispatch.rms_norm(x, w, 1e-6)
    out2, res = dispatch.rms_norm(x, w, 1e-6, residual=x)
    assert calls == [expected, expected]
    ref, _ = rmsnorm.rmsnorm_ref(x, w, 1e-6)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    assert torch.equal(res, x + x)
    assert out2.shape == x.shape


def test_auto_uses_reference_on_cpu_and_for_training(monkeypatch, calls, seed, device):
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")
    w = torch.randn(32, device=device, requires_grad=True)
    x = torch.randn(5, 32, device=device)
    out = dispatch.rms_norm(x, w, 1e-6)
    out.sum().backward()  # autograd needs the reference, whatever the device
    assert w.grad is not None
    with torch.no_grad():
        dispatch.rms_norm(x, w, 1e-6)
    expected_no_grad = "rmsnorm_triton" if device.type == "cuda" else "rmsnorm_ref"
    assert calls == ["rmsnorm_ref", expected_no_grad]


def test_forced_triton_refuses_autograd(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    w = torch.randn(16, requires_grad=True)
    with pytest.raises(RuntimeError, match="forward-only"):
        dispatch.rms_norm(torch.randn(2, 16), w, 1e-6)


def test_every_dispatcher_function_matches_across_backends(monkeypatch, seed, device):
    """Each entry point gives the same answer with triton forced and with torch forced."""
    x = torch.randn(9, 64, device=device)
    gate = torch.randn(8, 64, device=device)
    q, k = torch.randn(1, 2, 9, 32, device=device), torch.randn(1, 2, 9, 32, device=device)
    cos, sin = torch.randn(9, 32, device=device), torch.randn(9, 32, device=device)
    rel_h, rel_w = torch.randn(1, 2, 9, 3, device=device), torch.randn(1, 2, 9, 3, device=device)
    wg, wu, wd = (
        torch.randn(8, 32, 64, device=device) / 8,
        torch.randn(8, 32, 64, device=device) / 8,
        torch.randn(8, 64, 32, device=device) / 6,
    )
    results = {}
    for setting in ("torch", "triton"):
        monkeypatch.setenv(dispatch.ENV_VAR, setting)
        r = dispatch.moe_route(x, gate, 2, norm_topk_prob=True, routed_scaling_factor=1.5)
        order = r.topk_ids.long().argsort(1)
        results[setting] = {
            "ids": r.topk_ids.long().gather(1, order),
            "w": r.topk_weights.gather(1, order),
            "counts": r.expert_counts,
            "norm": dispatch.rms_norm(x, gate[0], 1e-6),
            "rot": torch.cat(dispatch.apply_rotary(q, k, cos, sin)),
            "moe": dispatch.moe_experts(x, wg, wu, wd, r.topk_ids, r.topk_weights, r.expert_counts),
            "attn": dispatch.window_attention(q, k, k, rel_h, rel_w),
        }
    for key, ref in results["torch"].items():
        torch.testing.assert_close(results["triton"][key], ref, atol=2e-5, rtol=1e-4, msg=key)


class _Expert(nn.Module):
    def __init__(self, h, i):
        super().__init__()
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def test_expert_modules_and_stacking_cache(monkeypatch, seed, device):
    E, H, inter, M, K = 6, 64, 32, 11, 2
    experts = nn.ModuleList(_Expert(H, inter) for _ in range(E)).to(device)
    x = torch.randn(M, H, device=device)
    ids = torch.stack([torch.randperm(E - 1, device=device)[:K] for _ in range(M)])  # expert E-1 unused
    w = torch.rand(M, K, device=device)
    stacked = dispatch.stacked_expert_weights(experts)
    assert stacked[0].shape == (E, inter, H) and stacked[2].shape == (E, H, inter)
    assert dispatch.stacked_expert_weights(experts) is stacked, "cached while weights are unchanged"
    with torch.no_grad():
        experts[3].up_proj.weight.mul_(2)  # in-place change bumps the version: cache rebuilt
    restacked = dispatch.stacked_expert_weights(experts)
    assert restacked is not stacked and torch.equal(restacked[1][3], experts[3].up_proj.weight)

    with torch.no_grad():
        monkeypatch.setenv(dispatch.ENV_VAR, "torch")
        ref = dispatch.moe_experts_modules(x, experts, ids, w)
        monkeypatch.setenv(dispatch.ENV_VAR, "triton")
        out = dispatch.moe_experts_modules(x, experts, ids.to(torch.int32), w)
    stacked_ref = moe_experts.moe_experts_ref(x, *restacked, ids, w)
    torch.testing.assert_close(ref, stacked_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_dispatch_without_triton_installed(tmp_path):
    """Import and the torch paths work with triton unimportable; forcing triton fails clearly."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None  # makes `import triton` raise ImportError
        import torch
        from ocrstream.kernels import dispatch
        x = torch.randn(3, 8)
        out = dispatch.rms_norm(x, torch.ones(8), 1e-6)
        assert out.shape == (3, 8)
        r = dispatch.moe_route(x, torch.randn(4, 8), 2)
        assert r.topk_ids.shape == (3, 2)
        import os
        os.environ["OCRSTREAM_KERNELS"] = "triton"
        try:
            dispatch.rms_norm(x, torch.ones(8), 1e-6)
        except ImportError as exc:
            assert "triton is not installed" in str(exc), exc
            print("OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OCRSTREAM_KERNELS", "TRITON_INTERPRET")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"


def test_forced_triton_on_cpu_without_interpreter_fails_clearly():
    """Kernel modules imported without TRITON_INTERPRET cannot run on CPU: say so, not 'no driver'."""
    code = textwrap.dedent(
        """
        import os, torch
        os.environ.pop("TRITON_INTERPRET", None)
        from ocrstream.kernels import dispatch, rmsnorm  # rmsnorm's decorators run now
        os.environ["OCRSTREAM_KERNELS"] = "triton"
        os.environ["TRITON_INTERPRET"] = "1"  # too late for them
        try:
            dispatch.rms_norm(torch.randn(2, 8), torch.ones(8), 1e-6)
        except RuntimeError as exc:
            assert "TRITON_INTERPRET=1 set before" in str(exc), exc
            print("OK")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OCRSTREAM_KERNELS", "TRITON_INTERPRET")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"
