"""config.json I/O for ``DeepseekOCRConfig`` in the official Hugging Face layout.

Follows the official ``deepseek-ai/DeepSeek-OCR`` ``config.json``: DeepSeek-V2 decoder fields at
top level (repeated under ``language_config``), ``vision_config.width.{sam_vit_b,clip-l-14-224}``,
``projector_config``. Sizes the official code hard-codes (SAM window, neck, CLIP mlp, ...) and our
own settings are written under ``vision_config.ocrstream`` only where they differ from official.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import ClipConfig, DecoderConfig, DeepseekOCRConfig, ProjectorConfig, SamConfig


def to_hf_dict(cfg: DeepseekOCRConfig) -> dict[str, Any]:
    """The official config.json layout; non-official sizes go under vision_config.ocrstream."""
    d = cfg.decoder
    lm = {
        "bos_token_id": d.bos_token_id,
        "eos_token_id": d.eos_token_id,
        "first_k_dense_replace": d.first_k_dense_replace,
        "hidden_size": d.hidden_size,
        "intermediate_size": d.intermediate_size,
        "kv_lora_rank": None,
        "lm_head": True,
        "max_position_embeddings": d.max_position_embeddings,
        "moe_intermediate_size": d.moe_intermediate_size,
        "n_group": 1,
        "n_routed_experts": d.n_routed_experts,
        "n_shared_experts": d.n_shared_experts,
        "num_attention_heads": d.num_attention_heads,
        "num_experts_per_tok": d.num_experts_per_tok,
        "num_hidden_layers": d.num_hidden_layers,
        "num_key_value_heads": d.num_key_value_heads,
        "q_lora_rank": None,
        "qk_nope_head_dim": 0,
        "qk_rope_head_dim": 0,
        "rm_head": False,
        "topk_group": 1,
        "topk_method": d.topk_method,
        "use_mla": False,
        "v_head_dim": 0,
        "vocab_size": d.vocab_size,
    }
    extra_lm = {
        "moe_layer_freq": d.moe_layer_freq,
        "norm_topk_prob": d.norm_topk_prob,
        "routed_scaling_factor": d.routed_scaling_factor,
        "scoring_func": d.scoring_func,
        "rms_norm_eps": d.rms_norm_eps,
        "rope_theta": d.rope_theta,
        "attention_bias": d.attention_bias,
        "tie_word_embeddings": d.tie_word_embeddings,
        "pad_token_id": d.pad_token_id,
        "aux_loss_alpha": d.aux_loss_alpha,
    }
    s, c = cfg.sam, cfg.clip
    out: dict[str, Any] = {
        "_name_or_path": cfg.name,
        "architectures": ["DeepseekOCRForCausalLM"],
        "candidate_resolutions": [[1024, 1024]],
        "global_view_pos": "head",
        "language_config": {
            "architectures": ["DeepseekV2ForCausalLM"],
            **lm,
            "torch_dtype": cfg.torch_dtype,
        },
        "model_type": "deepseek_vl_v2",
        "projector_config": {
            "input_dim": cfg.projector.input_dim,
            "model_type": "mlp_projector",
            "n_embed": cfg.projector.n_embed,
            "projector_type": cfg.projector.projector_type,
        },
        "tile_tag": cfg.tile_tag,
        "torch_dtype": cfg.torch_dtype,
        "vision_config": {
            "image_size": s.img_size,
            "mlp_ratio": 3.7362,
            "model_name": "deeplip_b_l",
            "model_type": "vision",
            "width": {
                "clip-l-14-224": {
                    "heads": c.heads,
                    "image_size": c.image_size,
                    "layers": c.layers,
                    "patch_size": c.patch_size,
                    "width": c.width,
                },
                "sam_vit_b": {
                    "downsample_channels": list(s.downsample_channels),
                    "global_attn_indexes": list(s.global_attn_indexes),
                    "heads": s.heads,
                    "layers": s.depth,
                    "width": s.width,
                },
            },
        },
        **lm,
    }
    # Keys the official code hard-codes; written only where they differ from official.
    ours = {
        "sam": _diff(s, SamConfig()),
        "clip": _diff(c, ClipConfig()),
        "decoder": _diff_dict(extra_lm, DecoderConfig()),
        "top": {
            k: getattr(cfg, k)
            for k in (
                "image_token_id",
                "ngram_whitelist",
                "max_crops",
                "min_crops",
                "default_mode",
                "ctc_head",
                "line_decoding",
                "ctc_weight",
            )
            if getattr(cfg, k) != getattr(DeepseekOCRConfig(), k)
        },
    }
    ours = {k: v for k, v in ours.items() if v}
    if ours:
        out["vision_config"]["ocrstream"] = _jsonable(ours)
    return out


def from_hf_dict(raw: dict[str, Any]) -> DeepseekOCRConfig:
    lm_src = dict(raw.get("language_config") or {})
    lm_src.update({k: v for k, v in raw.items() if k in _DECODER_FIELDS})  # top level wins (HF)
    dec = DecoderConfig(**{k: v for k, v in lm_src.items() if k in _DECODER_FIELDS and v is not None})
    if lm_src.get("use_mla"):
        raise ValueError("config uses MLA attention (use_mla true); only MHA checkpoints are supported")
    vc = raw.get("vision_config") or {}
    widths = vc.get("width") or {}
    sb = widths.get("sam_vit_b") or {}
    cl = widths.get("clip-l-14-224") or {}
    sam = SamConfig(
        img_size=int(vc.get("image_size", 1024)),
        width=int(sb.get("width", 768)),
        depth=int(sb.get("layers", 12)),
        heads=int(sb.get("heads", 12)),
        global_attn_indexes=tuple(sb.get("global_attn_indexes", (2, 5, 8, 11))),
        downsample_channels=tuple(sb.get("downsample_channels", (512, 1024))),
    )
    clip = ClipConfig(
        width=int(cl.get("width", 1024)),
        layers=int(cl.get("layers", 24)),
        heads=int(cl.get("heads", 16)),
        image_size=int(cl.get("image_size", 224)),
        patch_size=int(cl.get("patch_size", 14)),
    )
    pc = raw.get("projector_config") or {}
    proj = ProjectorConfig(
        projector_type=pc.get("projector_type", "linear"),
        input_dim=int(pc.get("input_dim", 2048)),
        n_embed=int(pc.get("n_embed", 1280)),
    )
    cfg = DeepseekOCRConfig(
        sam=sam,
        clip=clip,
        projector=proj,
        decoder=dec,
        tile_tag=raw.get("tile_tag", "2D"),
        torch_dtype=raw.get("torch_dtype", "bfloat16"),
        name=raw.get("_name_or_path", "deepseek-ocr"),
    )
    ours = vc.get("ocrstream") or {}
    for part, obj in (("sam", cfg.sam), ("clip", cfg.clip), ("decoder", cfg.decoder), ("top", cfg)):
        for k, v in (ours.get(part) or {}).items():
            if not hasattr(obj, k):
                raise ValueError(f"unknown config key vision_config.ocrstream.{part}.{k}")
            setattr(obj, k, tuple(v) if isinstance(v, list) else v)
    cfg.validate()
    return cfg


_DECODER_FIELDS = {f.name for f in dataclasses.fields(DecoderConfig)}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return v


def _diff(obj: Any, ref: Any) -> dict[str, Any]:
    return {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if getattr(obj, f.name) != getattr(ref, f.name)
    }


def _diff_dict(values: dict[str, Any], ref: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v != getattr(ref, k)}
