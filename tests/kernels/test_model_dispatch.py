"""Acceptance: the DeepSeek-OCR model run through the dispatcher with Triton forced (the CPU
interpreter here, the GPU on a lent machine) equals the PyTorch reference path, tiny config."""

import pytest
import torch

from ocrstream.kernels import dispatch, moe_experts, moe_routing, rmsnorm, rotary
from ocrstream.model.config import tiny_test_config
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.moe_decoder import DeepseekV2MoE, KVCache, moe_experts_ref

KERNELS = [
    (rmsnorm, "rmsnorm_triton"),
    (rotary, "rotary_triton"),
    (moe_routing, "moe_routing_triton"),
    (moe_experts, "moe_experts_triton"),
]


@pytest.fixture
def model(seed, device):
    m = DeepseekOCRForCausalLM(tiny_test_config()).eval().to(device)
    with torch.no_grad():  # spread the router so top-k picks are not near ties
        for layer in m.model.layers:
            if isinstance(layer.mlp, DeepseekV2MoE):
                layer.mlp.gate.weight.normal_(std=1.0)
        m.model.embed_tokens.weight.normal_(std=1.0)
    return m


@pytest.fixture
def kernel_calls(monkeypatch):
    counts = {name: 0 for _, name in KERNELS}
    for mod, name in KERNELS:
        real = getattr(mod, name)

        def spy(*a, _real=real, _name=name, **kw):
            counts[_name] += 1
            return _real(*a, **kw)

        monkeypatch.setattr(mod, name, spy)
    return counts


def _forward(model, monkeypatch, setting, ids, mask):
    monkeypatch.setenv(dispatch.ENV_VAR, setting)
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        # prefill + two one-token decode steps through the KV cache
        cache = KVCache(len(model.model.layers))
        steps = [model(ids[:, :-2], attention_mask=mask[:, :-2], cache=cache, last_only=True).logits]
        for t in (-2, -1):
            step_ids, step_mask = ids[:, t:][:, :1], mask[:, t:][:, :1]
            steps.append(model(step_ids, attention_mask=step_mask, cache=cache, last_only=True).logits)
    return full, torch.cat(steps, dim=1)


def test_model_forward_triton_equals_reference(model, monkeypatch, kernel_calls, device):
    cfg = model.config.decoder
    B, T = 2, 11
    ids = torch.randint(3, cfg.vocab_size - 4, (B, T), device=device)
    mask = torch.ones(B, T, dtype=torch.long, device=device)
    mask[1, :3] = 0  # left padding on the second row

    ref_full, ref_steps = _forward(model, monkeypatch, "torch", ids, mask)
    assert all(v == 0 for v in kernel_calls.values()), kernel_calls
    tri_full, tri_steps = _forward(model, monkeypatch, "triton", ids, mask)
    assert all(v > 0 for v in kernel_calls.values()), f"a hot path bypassed the kernels: {kernel_calls}"

    # fp32 end to end; differences are accumulation order in GEMMs/reductions across 3 layers.
    scale = ref_full.abs().max().item()
    torch.testing.assert_close(tri_full, ref_full, atol=1e-4 * scale, rtol=1e-4)
    torch.testing.assert_close(tri_steps, ref_steps, atol=1e-4 * scale, rtol=1e-4)
    # Same greedy choices (what generation emits) wherever the top two logits are not within tolerance.
    top2 = ref_full.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 1e-3 * scale
    assert torch.equal(tri_full.argmax(-1)[clear], ref_full.argmax(-1)[clear])


def test_reference_path_is_the_models_own_math(model, monkeypatch, device):
    """With the torch backend the dispatched MoE block is bit-identical to the model's own
    ``moe_experts_ref`` + gate + shared MLP (guards drift between the two copies)."""
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    moe = next(layer.mlp for layer in model.model.layers if isinstance(layer.mlp, DeepseekV2MoE))
    x = torch.randn(2, 9, model.config.decoder.hidden_size, device=device)
    with torch.no_grad():
        got = moe(x)
        flat = x.reshape(-1, x.shape[-1])
        idx, weights, _ = moe.gate(flat)
        want = moe_experts_ref(flat, idx, weights, moe.experts).view(x.shape) + moe.shared_experts(x)
    assert torch.equal(got, want)
