"""DeepSeek-3B-MoE decoder (DeepSeek-V2 architecture with plain multi-head attention).

Follows HF ``modeling_deepseekv2.py`` as used by DeepSeek-OCR (``use_mla: false`` selects the
Llama MHA path): RMSNorm in fp32 (eps 1e-6); rotate-half rotary embedding (theta 10000) over the
whole head; bias-free q/k/v/o; layer 0 a dense SiLU MLP (``first_k_dense_replace``), the other
layers ``DeepseekV2MoE``: fp32 softmax gate, greedy top-k without renormalisation
(``norm_topk_prob`` false), ``routed_scaling_factor``, expert outputs summed in fp32, plus the
shared experts as one MLP. Names equal the checkpoint keys under ``model.`` (``embed_tokens``,
``layers.N.self_attn.*``, ``layers.N.mlp.experts.E.*``, ``mlp.shared_experts.*``, ``mlp.gate``).

Attention takes per-row position ids and a key-validity mask, so a left-padded batch equals the
same rows run one at a time. ``KVCache`` keeps preallocated per-layer keys/values.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ocrstream.kernels import dispatch

from .config import DecoderConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # weight * (x.float() * rsqrt(mean(x^2) + eps)).to(x.dtype); Triton on CUDA (kernels/rmsnorm.py)
        return dispatch.rms_norm(x, self.weight, self.eps)


def rotary_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, T] -> cos, sin [B, 1, T, head_dim] (fp32 math, cast to dtype)."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )
    freqs = positions.float()[..., None] * inv_freq  # [B, T, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [B, T, hd]
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Per-layer keys/values [B, kv_heads, capacity, hd] plus the key-validity mask [B, L].

    All rows share one length (batches are left-padded); ``valid`` marks the real tokens.
    ``reserve``: room for that many more positions past the first update (the decode steps to
    come), so that decoding does not grow and copy the buffers on the way.
    """

    def __init__(self, n_layers: int, reserve: int = 0) -> None:
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.valid: torch.Tensor | None = None
        self.length = 0
        self.reserve = reserve

    def append_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """Register validity [B, T] for the new tokens; returns the mask over all keys [B, L]."""
        self.valid = valid if self.valid is None else torch.cat([self.valid, valid], dim=1)
        return self.valid

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.length
        end = start + k.shape[2]
        buf_k = self.k[layer]
        if buf_k is None or buf_k.shape[2] < end:
            cap = max(end + self.reserve, 2 * (buf_k.shape[2] if buf_k is not None else 0), 64)
            new_k = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            new_v = v.new_empty(v.shape[0], v.shape[1], cap, v.shape[3])
            if buf_k is not None:
                new_k[:, :, :start] = buf_k[:, :, :start]
                new_v[:, :, :start] = self.v[layer][:, :, :start]
            self.k[layer], self.v[layer] = new_k, new_v
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def keep(self, dst: list[int], src: list[int], n: int) -> None:
        """Compact the batch to its first ``n`` rows after moving rows ``src`` into rows ``dst``
        (``generation.compact_rows``): only the moved rows are copied, in place."""
        if dst:
            d = torch.tensor(dst, device=self.valid.device)
            s = torch.tensor(src, device=self.valid.device)
            for bufs in (self.k, self.v):
                for buf in bufs:
                    if buf is not None:
                        buf[d, :, : self.length] = buf[s, :, : self.length]
            self.valid[d] = self.valid[s]
        self.k = [None if buf is None else buf[:n] for buf in self.k]
        self.v = [None if buf is None else buf[:n] for buf in self.v]
        self.valid = self.valid[:n]


def build_attn_mask(q_len: int, key_valid: torch.Tensor) -> torch.Tensor:
    """Boolean mask [B, 1, q_len, L]: causal over the last q_len positions and valid keys only.

    Each query may always see itself so a padded query row is never fully masked (NaN-free).
    """
    b, total = key_valid.shape
    q_pos = torch.arange(total - q_len, total, device=key_valid.device)[:, None]
    k_pos = torch.arange(total, device=key_valid.device)[None, :]
    causal = k_pos <= q_pos  # [q, L]
    mask = causal[None] & key_valid[:, None, :]
    mask = mask | (k_pos == q_pos)[None]
    return mask[:, None]


def on_tokens(
    x: torch.Tensor, tokens: torch.Tensor | None, *fns: Callable[[torch.Tensor], torch.Tensor]
) -> list[torch.Tensor]:
    """Each of ``fns`` on the tokens of x [B, T, H] at flat indices ``tokens`` only (None: every
    token), zeros at the others (padding, which no real token attends to)."""
    if tokens is None:
        return [fn(x) for fn in fns]
    picked = x.reshape(-1, x.shape[-1])[tokens]
    out = []
    for fn in fns:
        y = fn(picked)
        full = y.new_zeros(x.shape[0] * x.shape[1], y.shape[-1]).index_copy_(0, tokens, y)
        out.append(full.view(*x.shape[:-1], y.shape[-1]))
    return out


class DeepseekV2Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = cfg.num_attention_heads
        self.num_kv = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.theta = cfg.rope_theta
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, self.num_heads * self.head_dim, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(h, self.num_kv * self.head_dim, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(h, self.num_kv * self.head_dim, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, h, bias=cfg.attention_bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache | None,
        tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = on_tokens(x, tokens, self.q_proj, self.k_proj, self.v_proj)
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # [B, nh, T, hd]
        k = k.view(b, t, self.num_kv, self.head_dim).transpose(1, 2)  # [B, nkv, T, hd]
        v = v.view(b, t, self.num_kv, self.head_dim).transpose(1, 2)
        q, k = dispatch.apply_rotary(q, k, cos, sin)  # = apply_rotary on each (kernels/rotary.py)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # [B, nkv, L, hd]
        if self.num_kv != self.num_heads:
            rep = self.num_heads // self.num_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # scale 1/sqrt(hd)
        return on_tokens(out.transpose(1, 2).reshape(b, t, -1), tokens, self.o_proj)[0]


class DeepseekV2MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoEGate(nn.Module):
    """Softmax router in fp32; greedy top-k; returns (indices [N, k], weights [N, k] fp32, scores)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.n_experts = cfg.n_routed_experts
        self.norm_topk_prob = cfg.norm_topk_prob
        self.scaling = cfg.routed_scaling_factor
        if cfg.scoring_func != "softmax" or cfg.topk_method != "greedy":
            raise ValueError(f"unsupported router: scoring {cfg.scoring_func!r}, topk {cfg.topk_method!r}")
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = F.linear(x.float(), self.weight.float())  # [N, E]
        scores = logits.softmax(dim=-1)
        weights, idx = torch.topk(scores, k=self.top_k, dim=-1, sorted=False)  # [N, k]
        if self.top_k > 1 and self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return idx, weights * self.scaling, scores


def moe_experts_ref(
    x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor, experts: nn.ModuleList
) -> torch.Tensor:
    """sum_k w_k * expert_{idx_k}(x) per token: x [N, H], idx/weights [N, k] -> [N, H] in x.dtype.

    Expert outputs are computed in the activation dtype, weighted and summed in fp32. One
    implementation, the one the dispatcher falls back to off CUDA (kernels/moe_experts.py).
    """
    from ocrstream.kernels.moe_experts import moe_experts_modules_ref

    return moe_experts_modules_ref(x, experts, idx, weights)


class DeepseekV2MoE(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.experts = nn.ModuleList(
            DeepseekV2MLP(cfg.hidden_size, cfg.moe_intermediate_size) for _ in range(cfg.n_routed_experts)
        )
        self.gate = MoEGate(cfg)
        self.shared_experts = (
            DeepseekV2MLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)
            if cfg.n_shared_experts
            else None
        )
        self.last_aux_loss: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [N, H]
        self.last_aux_loss = None
        counts = None
        if self.training and self.cfg.aux_loss_alpha > 0:
            idx, weights, scores = self.gate(flat)
            # Expert-balance loss (DeepSeek-V2 gate, per batch): alpha * sum_e P_e * f_e * E.
            e = self.cfg.n_routed_experts
            ce = F.one_hot(idx.reshape(-1), e).float().mean(0)
            self.last_aux_loss = (scores.mean(0) * ce * e).sum() * self.cfg.aux_loss_alpha
        else:
            # Same routing as self.gate (fp32 logits, softmax, top-k, scaling); Triton on CUDA.
            g = self.gate
            idx, weights, counts = dispatch.moe_route(flat, g.weight, g.top_k, g.norm_topk_prob, g.scaling)
        # = moe_experts_ref below; fused grouped-GEMM Triton kernels on CUDA (kernels/moe_experts.py)
        y = dispatch.moe_experts_modules(flat, self.experts, idx, weights, counts).view(shape)
        if self.shared_experts is not None:
            y = y + self.shared_experts(x)
        return y


class DeepseekV2DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = DeepseekV2Attention(cfg, layer_idx)
        self.mlp: nn.Module = (
            DeepseekV2MoE(cfg)
            if cfg.is_moe_layer(layer_idx)
            else DeepseekV2MLP(cfg.hidden_size, cfg.intermediate_size)
        )
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, tokens=None):  # noqa: ANN001 - hot path
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, tokens)
        return h + on_tokens(h, tokens, self._mlp)[0]

    def _mlp(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.post_attention_layernorm(h))


class DeepseekV2Model(nn.Module):
    """Token embedding, decoder layers and final norm (the text half of ``model.``)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.dcfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DeepseekV2DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def run_decoder(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """inputs_embeds [B, T, H] -> final-normed hidden states [B, T, H].

        attention_mask [B, T] marks real tokens (1) vs padding (0); position ids default to the
        running count of real tokens, so left padding does not shift positions.
        """
        b, t, _ = inputs_embeds.shape
        dev = inputs_embeds.device
        valid = (
            torch.ones(b, t, dtype=torch.bool, device=dev)
            if attention_mask is None
            else attention_mask.bool()
        )
        if position_ids is None:
            past = (
                cache.valid.sum(dim=1, keepdim=True)
                if cache is not None and cache.valid is not None
                else torch.zeros(b, 1, dtype=torch.long, device=dev)
            )
            position_ids = (past + valid.long().cumsum(dim=1) - 1).clamp_min(0)
        key_valid = cache.append_mask(valid) if cache is not None else valid
        # additive float mask: the same attention as the boolean one, and CPU SDPA runs it ~3x
        # faster (measured at decode shapes, bench-free: batch 64, one query, 200 keys)
        if t == 1:  # a decode step: the new query sees every valid key and itself (no causal part)
            allowed = key_valid[:, None, None].clone()
            allowed[..., -1] = True
        else:
            allowed = build_attn_mask(t, key_valid)
        mask = torch.zeros(allowed.shape, dtype=inputs_embeds.dtype, device=dev).masked_fill_(
            ~allowed, float("-inf")
        )
        cos, sin = rotary_cos_sin(position_ids, self.dcfg.head_dim, self.dcfg.rope_theta, inputs_embeds.dtype)
        # inference on a left-padded batch (a page's strips run to ~40% padding): the per-token
        # work skips the padding (training keeps every token, as its MoE balance loss counts them)
        tokens = None
        if t > 1 and not self.training and not bool(valid.all()):
            tokens = valid.reshape(-1).nonzero().squeeze(1)
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache, tokens)
        if cache is not None:
            cache.advance(t)
        return self.norm(x)

    def aux_loss(self) -> torch.Tensor | None:
        losses = [
            m.mlp.last_aux_loss
            for m in self.layers
            if isinstance(m.mlp, DeepseekV2MoE) and m.mlp.last_aux_loss is not None
        ]
        return torch.stack(losses).sum() if losses else None
