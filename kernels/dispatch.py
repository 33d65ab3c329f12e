"""The one place that picks a Triton kernel or its PyTorch reference. Model code calls only these.

Backend setting: env ``OCRSTREAM_KERNELS`` = ``auto`` (default) | ``triton`` | ``torch``, read on every
call (no module state to reassign; tests use ``monkeypatch.setenv``).

- ``auto``: Triton for CUDA tensors when triton is installed and no gradient is needed (the
  kernels are forward-only); the reference otherwise (CPU, training).
- ``triton``: always the kernel; on CPU this needs ``TRITON_INTERPRET=1`` set before the kernel
  modules are imported. Asking for gradients raises.
- ``torch``: always the reference.

Kernel modules are imported on first use, so importing this module never imports triton, and the
references work where triton is not installed.
"""

from __future__ import annotations

import importlib
import os
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

ENV_VAR = "OCRSTREAM_KERNELS"
BACKENDS = ("auto", "triton", "torch")


def backend() -> str:
    """The configured backend name (validated)."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={value!r} is not one of {BACKENDS}")
    return value


def _module(name: str) -> Any:
    return importlib.import_module(f"ocrstream.kernels.{name}")


def _triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether a call on these tensors goes to the Triton kernel under the current setting."""
    choice = backend()
    if choice == "torch":
        return False
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if choice == "triton":
        if needs_grad:
            raise RuntimeError(
                f"{ENV_VAR}=triton but autograd is recording: the Triton kernels are forward-only "
                "(run under torch.no_grad()/inference_mode, or use auto/torch for training)"
            )
        return True
    return all(t.is_cuda for t in tensors) and not needs_grad and _triton_available()


# ---- RMSNorm ------------------------------------------------------------------------------------


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm(x [+ residual]). Without residual returns the normed tensor; with it, (normed, x + residual)."""
    mod = _module("rmsnorm")
    args = [x, weight] + ([] if residual is None else [residual])
    fn = mod.rmsnorm_triton if use_triton(*args) else mod.rmsnorm_ref
    out, new_residual = fn(x, weight, eps, residual=residual)
    return out if residual is None else (out, new_residual)


# ---- rotary -------------------------------------------------------------------------------------


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half rotary on q [B, Hq, T, D] and k [B, Hk, T, D]; cos/sin [B, 1, T, D], [B, T, D] or [T, D]."""
    mod = _module("rotary")
    fn = mod.rotary_triton if use_triton(q, k, cos, sin) else mod.rotary_ref
    return fn(q, k, cos, sin)


# ---- MoE ----------------------------------------------------------------------------------------


class MoeRouting(NamedTuple):
    topk_ids: torch.Tensor  # [M, k] int (int32 from the kernel, int64 from the reference)
    topk_weights: torch.Tensor  # [M, k] fp32, normalised/scaled per config
    expert_counts: torch.Tensor  # [E] int32 tokens per expert


def moe_route(
    x: torch.Tensor,
    gate_weight: torch.Tensor,
    top_k: int,
    norm_topk_prob: bool = False,
    routed_scaling_factor: float = 1.0,
    scoring_func: str = "softmax",
    topk_method: str = "greedy",
) -> MoeRouting:
    """DeepSeek-V2 gate on x [M, H] with gate weight [E, H]: fp32 logits, scores, top-k, weights, counts."""
    logits = F.linear(x.float(), gate_weight.float())  # [M, E], fp32 as the official gate
    mod = _module("moe_routing")
    fn = mod.moe_routing_triton if use_triton(x, gate_weight) else mod.moe_routing_ref
    w, ids, counts = fn(logits, top_k, norm_topk_prob, routed_scaling_factor, scoring_func, topk_method)
    return MoeRouting(ids, w, counts)


def moe_experts(
    x: torch.Tensor,
    w_gate: torch.Tensor,
    w_up: torch.Tensor,
    w_down: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    expert_counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Σ_k w_k · Expert_{id_k}(x) for x [M, H]; stacked weights w_gate/w_up [E, I, H], w_down [E, H, I]."""
    mod = _module("moe_experts")
    if use_triton(x, w_gate, w_up, w_down):
        return mod.moe_experts_triton(
            x, w_gate, w_up, w_down, topk_ids, topk_weights, expert_counts=expert_counts
        )
    return mod.moe_experts_ref(x, w_gate, w_up, w_down, topk_ids, topk_weights)


# Stacked copies of per-expert nn.Linear weights, per ModuleList, rebuilt when a weight changes.
_STACKED: weakref.WeakKeyDictionary[Any, tuple[tuple, tuple[torch.Tensor, ...]]] = weakref.WeakKeyDictionary()


def _param_key(p: torch.Tensor) -> tuple:
    try:
        version = p._version
    except RuntimeError:  # inference tensors carry no version counter
        version = -1
    return (p.data_ptr(), version, p.dtype, p.device, tuple(p.shape))


def stacked_expert_weights(
    experts: Sequence[torch.nn.Module],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w_gate [E, I, H], w_up [E, I, H], w_down [E, H, I]) from modules with gate/up/down_proj.

    Cached per ModuleList and rebuilt when any weight is replaced or modified in place. The copy
    costs one extra set of expert weights in memory; a model that stores its experts stacked can
    call ``moe_experts`` directly instead.
    """
    params = [(e.gate_proj.weight, e.up_proj.weight, e.down_proj.weight) for e in experts]
    key = tuple(_param_key(p) for trio in params for p in trio)
    hit = _STACKED.get(experts)
    if hit is not None and hit[0] == key:
        return hit[1]  # type: ignore[return-value]
    with torch.no_grad():
        stacked = tuple(torch.stack([trio[i] for trio in params]).contiguous() for i in range(3))
    _STACKED[experts] = (key, stacked)
    return stacked  # type: ignore[return-value]


def moe_experts_modules(
    x: torch.Tensor,
    experts: Sequence[torch.nn.Module],
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    expert_counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """``moe_experts`` for a ModuleList of SiLU-gated MLPs: the kernel on stacked weights, or the
    reference loop that calls each expert module (DeepSeek-V2 ``moe_infer``)."""
    first = experts[0].gate_proj.weight
    if use_triton(x, first):
        w_gate, w_up, w_down = stacked_expert_weights(experts)
        return _module("moe_experts").moe_experts_triton(
            x, w_gate, w_up, w_down, topk_ids, topk_weights, expert_counts=expert_counts
        )
    return _module("moe_experts").moe_experts_modules_ref(x, experts, topk_ids, topk_weights)


# ---- SAM attention ------------------------------------------------------------------------------


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q·kᵀ·scale + rel_h[.., j // KW] + rel_w[.., j % KW])·v for [B, H, L, D] inputs."""
    mod = _module("window_attention")
    tensors = [q, k, v] + ([rel_h, rel_w] if rel_h is not None else [])
    fn = mod.window_attention_triton if use_triton(*tensors) else mod.window_attention_ref
    return fn(q, k, v, rel_h, rel_w, scale)
