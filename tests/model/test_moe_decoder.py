"""MoE decoder math against naive references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ocrstream.model.config import DecoderConfig
from ocrstream.model.moe_decoder import (
    DeepseekV2MLP,
    DeepseekV2Model,
    DeepseekV2MoE,
    RMSNorm,
    apply_rotary,
    rotary_cos_sin,
)


def small_cfg(**kw) -> DecoderConfig:
    base = dict(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=7,
        n_shared_experts=2,
        num_experts_per_tok=3,
        first_k_dense_replace=1,
    )
    base.update(kw)
    return DecoderConfig(**base)


def naive_moe(moe: DeepseekV2MoE, x: torch.Tensor) -> torch.Tensor:
    cfg = moe.cfg
    flat = x.reshape(-1, x.shape[-1])
    out = torch.empty_like(flat)
    for t in range(flat.shape[0]):
        p = torch.softmax(flat[t].double() @ moe.gate.weight.double().T, dim=-1)
        w, idx = torch.topk(p, cfg.num_experts_per_tok)
        if cfg.norm_topk_prob:
            w = w / w.sum()
        acc = torch.zeros(flat.shape[1], dtype=torch.float64)
        for wk, e in zip(w.tolist(), idx.tolist(), strict=True):
            acc += cfg.routed_scaling_factor * wk * moe.experts[e](flat[t : t + 1])[0].double()
        out[t] = (acc + moe.shared_experts(flat[t : t + 1])[0].double()).float()
    return out.view_as(x)


@pytest.mark.parametrize(
    "kw", [{}, {"norm_topk_prob": True, "routed_scaling_factor": 2.5}, {"num_experts_per_tok": 1}]
)
def test_moe_matches_per_token_loop(seed, kw):
    moe = DeepseekV2MoE(small_cfg(**kw)).eval()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(3, 11, 32)
    with torch.no_grad():
        torch.testing.assert_close(moe(x), naive_moe(moe, x), atol=1e-5, rtol=1e-4)


def test_moe_empty_expert_and_all_on_one(seed):
    moe = DeepseekV2MoE(small_cfg(num_experts_per_tok=1)).eval()
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.weight[4, 0] = 50.0  # every token with x0 > 0 goes to expert 4
        x = torch.randn(9, 32)
        x[:, 0] = x[:, 0].abs() + 1.0
        torch.testing.assert_close(moe(x), naive_moe(moe, x), atol=1e-5, rtol=1e-4)


def test_experts_in_one_gather_equal_the_per_expert_loop(seed):
    """The routed experts' sum (one gather in, one scatter-add out) equals, bit for bit, the
    loop that runs and adds each expert's tokens in turn, and passes the same gradients."""
    from ocrstream.kernels.moe_experts import moe_experts_modules_ref

    def per_expert(x, experts, ids, w):
        out = torch.zeros(x.shape, dtype=torch.float32)
        token_of = torch.arange(x.shape[0]).repeat_interleave(ids.shape[1])
        for e in range(len(experts)):
            sel = (ids.reshape(-1) == e).nonzero().squeeze(1)  # token order, as a stable sort
            if len(sel):
                toks = token_of[sel]
                out.index_add_(0, toks, experts[e](x[toks]).float() * w.reshape(-1)[sel, None])
        return out.to(x.dtype)

    moe = DeepseekV2MoE(small_cfg()).eval()
    for n in (0, 1, 5, 40, 300):
        x = torch.randn(n, 32, requires_grad=True)
        ids = (
            torch.stack([torch.randperm(7)[:3] for _ in range(n)])
            if n
            else torch.zeros(0, 3, dtype=torch.long)
        )
        w = torch.rand(n, 3)
        got, want = moe_experts_modules_ref(x, moe.experts, ids, w), per_expert(x, moe.experts, ids, w)
        assert torch.equal(got, want)
        if n >= 40:  # every expert has tokens
            params = [x, moe.experts[0].up_proj.weight]
            for a, b in zip(
                torch.autograd.grad(got.sum(), params), torch.autograd.grad(want.sum(), params), strict=True
            ):
                torch.testing.assert_close(a, b)


def test_moe_aux_loss_only_in_training(seed):
    moe = DeepseekV2MoE(small_cfg())
    moe.train()
    moe(torch.randn(5, 32))
    assert moe.last_aux_loss is not None and moe.last_aux_loss.item() > 0
    moe.eval()
    moe(torch.randn(5, 32))
    assert moe.last_aux_loss is None


def test_rmsnorm_fp32_math(seed):
    norm = RMSNorm(16, 1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    xf = x.float()
    want = norm.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    assert torch.equal(norm(x), want)


def test_rotary_rotate_half_pairs(seed):
    hd = 8
    pos = torch.tensor([[0, 3, 7]])
    cos, sin = rotary_cos_sin(pos, hd, 10000.0, torch.float32)
    x = torch.randn(1, 1, 3, hd)
    got = apply_rotary(x, cos, sin)
    # rotate-half: dimension i pairs with i + hd/2, angle pos * theta^(-2i/hd)
    for t, p in enumerate(pos[0].tolist()):
        for i in range(hd // 2):
            ang = p * 10000.0 ** (-2 * i / hd)
            a, b = x[0, 0, t, i], x[0, 0, t, i + hd // 2]
            torch.testing.assert_close(
                got[0, 0, t, i], a * torch.cos(torch.tensor(ang)) - b * torch.sin(torch.tensor(ang))
            )
            torch.testing.assert_close(
                got[0, 0, t, i + hd // 2], b * torch.cos(torch.tensor(ang)) + a * torch.sin(torch.tensor(ang))
            )
    assert torch.equal(got[0, 0, 0], x[0, 0, 0])  # position 0 is identity


def reference_decoder(model: DeepseekV2Model, x: torch.Tensor) -> torch.Tensor:
    """Plain causal pass written out (no cache, explicit softmax attention)."""
    cfg = model.dcfg
    b, t, _ = x.shape
    cos, sin = rotary_cos_sin(torch.arange(t)[None].expand(b, t), cfg.head_dim, cfg.rope_theta, x.dtype)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for layer in model.layers:
        a = layer.self_attn
        h = layer.input_layernorm(x)
        q = apply_rotary(a.q_proj(h).view(b, t, a.num_heads, -1).transpose(1, 2), cos, sin)
        k = apply_rotary(a.k_proj(h).view(b, t, a.num_heads, -1).transpose(1, 2), cos, sin)
        v = a.v_proj(h).view(b, t, a.num_heads, -1).transpose(1, 2)
        s = (q @ k.transpose(-1, -2)) / a.head_dim**0.5
        s = s.masked_fill(~causal, float("-inf"))
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
        x = x + a.o_proj(o)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.norm(x)


def test_decoder_stack_matches_reference(seed):
    cfg = small_cfg()
    model = DeepseekV2Model(cfg).eval()
    assert isinstance(model.layers[0].mlp, DeepseekV2MLP)
    assert all(isinstance(layer.mlp, DeepseekV2MoE) for layer in model.layers[1:])
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.run_decoder(x), reference_decoder(model, x), atol=1e-5, rtol=1e-4)


def test_gqa_heads_repeat(seed):
    cfg = small_cfg(num_key_value_heads=2)
    model = DeepseekV2Model(cfg).eval()
    x = torch.randn(1, 5, 32)
    with torch.no_grad():
        out = model.run_decoder(x)
    assert out.shape == (1, 5, 32) and torch.isfinite(out).all()
    assert F.mse_loss(out, model.run_decoder(x[:, :5])) == 0
