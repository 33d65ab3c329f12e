"""Typed model configuration for DeepSeek-OCR and its small variants.

Follows the official Hugging Face ``config.json`` of ``deepseek-ai/DeepSeek-OCR`` (top-level
DeepSeek-V2 fields, ``vision_config.width.{sam_vit_b,clip-l-14-224}``, ``projector_config``) and the
sizes hard-coded in the official ``deepencoder/sam_vary_sdpa.py`` and ``clip_sdpa.py``. Defaults equal
the official checkpoint; ``embedded_config()`` is the small preset this repo trains (same classes,
small dims). Small models save the hard-coded encoder sizes as extra ``config.json`` keys
(``vision_config.ocrstream``) so the file keeps the official format.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SamConfig:
    """SAM ViT-B/16 windowed encoder + neck + 16x compressor (``model.sam_model``)."""

    img_size: int = 1024  # pretraining size: pos_embed grid is img_size // patch_size per side
    patch_size: int = 16
    in_chans: int = 3
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    neck_chans: int = 256
    downsample_channels: tuple[int, ...] = (512, 1024)  # net_2, net_3 output channels
    layer_norm_eps: float = 1e-6
    # ocrstream extensions for text-line strips; the defaults are the official square encoder.
    stem_chans: tuple[int, ...] = ()  # 3x3 stride-2 convs (GELU) before the patch embedding
    strip_height: int = 0  # > 0: views are strips this tall and of any width (see width_multiple)
    max_width: int = 0  # widest strip in px: the position table's columns
    compress_stride: tuple[int, int] = (2, 2)  # (rows, cols) stride of each of net_2 and net_3

    @property
    def strips(self) -> bool:
        return self.strip_height > 0

    @property
    def stride(self) -> int:
        """Pixels per SAM token side: the stem's stride-2 convs times the patch size."""
        return self.patch_size * 2 ** len(self.stem_chans)

    @property
    def pos_grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def pos_shape(self) -> tuple[int, int]:
        """(rows, cols) of the absolute position table."""
        if self.strips:
            return (self.strip_height // self.stride, self.max_width // self.stride)
        return (self.pos_grid, self.pos_grid)

    @property
    def token_px(self) -> tuple[int, int]:
        """(height, width) in px of the image area behind one compressed vision token."""
        r, c = self.compress_stride
        return (self.stride * r * r, self.stride * c * c)

    @property
    def width_multiple(self) -> int:
        """Strip widths are padded to a multiple of this: whole attention windows and tokens, so a
        strip's tokens do not depend on what it is batched with."""
        window = self.stride * max(1, self.window_size)
        return window * self.token_px[1] // math.gcd(window, self.token_px[1])

    @property
    def out_chans(self) -> int:
        return self.downsample_channels[-1]


@dataclass
class ClipConfig:
    """CLIP-L/14 transformer fed with the compressed SAM tokens (``model.vision_model``)."""

    width: int = 1024
    layers: int = 24
    heads: int = 16
    image_size: int = 224  # pretraining size: position grid is image_size // patch_size per side
    patch_size: int = 14
    mlp_ratio: float = 4.0  # 4096 = 4 * 1024 (config.json's 3.7362 is not read by the official code)
    layer_norm_eps: float = 1e-5
    # ocrstream extension: > 0 gives a 1-D table of this many token positions (+ CLS), cropped to
    # the strip's length, instead of the square grid resized to the view
    max_positions: int = 0

    @property
    def pos_grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def intermediate_size(self) -> int:
        return int(self.width * self.mlp_ratio)


@dataclass
class ProjectorConfig:
    projector_type: str = "linear"
    input_dim: int = 2048  # [CLIP width | SAM out channels]
    n_embed: int = 1280  # decoder hidden size


@dataclass
class DecoderConfig:
    """DeepSeek-V2 MoE decoder with MHA (use_mla false), as read from config.json top level."""

    vocab_size: int = 129280
    hidden_size: int = 1280
    intermediate_size: int = 6848  # dense MLP of the first_k_dense_replace layers
    moe_intermediate_size: int = 896
    num_hidden_layers: int = 12
    num_attention_heads: int = 10
    num_key_value_heads: int = 10
    n_routed_experts: int = 64
    n_shared_experts: int = 2  # one shared MLP of width n_shared * moe_intermediate
    num_experts_per_tok: int = 6
    first_k_dense_replace: int = 1
    moe_layer_freq: int = 1
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    scoring_func: str = "softmax"
    topk_method: str = "greedy"
    aux_loss_alpha: float = 0.001
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: int = 2  # not in config.json; the tokenizer's <｜▁pad▁｜>

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def is_moe_layer(self, idx: int) -> bool:
        return (
            self.n_routed_experts > 0 and idx >= self.first_k_dense_replace and idx % self.moe_layer_freq == 0
        )


@dataclass
class DeepseekOCRConfig:
    sam: SamConfig = field(default_factory=SamConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    image_token_id: int = 128815  # "<image>", hard-coded in HF infer()
    ngram_whitelist: tuple[int, ...] = (128821, 128822)  # <td>, </td>
    tile_tag: str = "2D"
    # Tile-count ceiling for Gundam modes: HF infer() uses 9 (and the paper says 2..9); the official
    # vLLM config lowers it to 6 for small GPUs. Only images whose best grid has > 6 tiles differ.
    max_crops: int = 9
    min_crops: int = 2
    # Mode used when a caller names none: the official scripts default to Gundam (1024 + 640 tiles).
    # A mode name or a size spec "<base>" / "<base>x<tile>" (see modes.get_mode).
    default_mode: str = "gundam"
    torch_dtype: str = "bfloat16"
    name: str = "deepseek-ocr"
    # ocrstream extension: a CTC head (``ctc_head``, blank = pad id) on the vision tokens, for
    # line-strip readers; the official model has none
    ctc_head: bool = False
    # how a line-strip model reads a strip: "ctc" (greedy CTC), "ar" (the decoder alone) or
    # "guided" (the decoder with CTC prefix scores, ``generation.generate(ctc=...)``)
    line_decoding: str = "guided"
    ctc_weight: float = 0.5
    # "fallback": greedy CTC for strips whose least sure frame is at least this probable, guided
    # decoding for the others (the decoder's step loop costs far more than one CTC pass)
    ctc_confidence: float = 0.9
    # the rungs auto mode and progressive forgetting choose from (mode specs, most tokens first);
    # empty: the official ladder scaled to the model's view (``compression.ladder``)
    compression_modes: tuple[str, ...] = ()

    def validate(self) -> None:
        s, c, p, d = self.sam, self.clip, self.projector, self.decoder
        problems = []
        if s.out_chans != c.width:
            problems.append(f"SAM out channels {s.out_chans} != CLIP width {c.width}")
        if p.input_dim != c.width + s.out_chans:
            problems.append(f"projector input_dim {p.input_dim} != {c.width} + {s.out_chans}")
        if p.n_embed != d.hidden_size:
            problems.append(f"projector n_embed {p.n_embed} != decoder hidden {d.hidden_size}")
        if d.hidden_size % d.num_attention_heads:
            problems.append(f"hidden {d.hidden_size} not divisible by heads {d.num_attention_heads}")
        if d.num_attention_heads % d.num_key_value_heads:
            problems.append(
                f"heads {d.num_attention_heads} not a multiple of kv heads {d.num_key_value_heads}"
            )
        if s.width % s.heads or c.width % c.heads:
            problems.append(f"SAM {s.width}/{s.heads} or CLIP {c.width}/{c.heads} width/heads mismatch")
        if any(i >= s.depth or i < 0 for i in s.global_attn_indexes):
            problems.append(f"global_attn_indexes {s.global_attn_indexes} outside depth {s.depth}")
        if d.num_experts_per_tok > max(d.n_routed_experts, 0) and d.n_routed_experts:
            problems.append(f"top-k {d.num_experts_per_tok} > experts {d.n_routed_experts}")
        if not (0 <= self.image_token_id < d.vocab_size):
            problems.append(f"image_token_id {self.image_token_id} outside vocab {d.vocab_size}")
        if p.projector_type != "linear":
            problems.append(f"projector_type {p.projector_type!r} unsupported (only 'linear')")
        if self.line_decoding not in ("ctc", "ar", "guided", "fallback"):
            problems.append(f"line_decoding {self.line_decoding!r} not in ctc|ar|guided|fallback")
        if self.line_decoding != "ar" and s.strips and not self.ctc_head:
            problems.append(f"line_decoding {self.line_decoding!r} needs the CTC head")
        if s.strips:
            if s.strip_height % s.token_px[0] or s.strip_height != s.token_px[0]:
                problems.append(f"strip height {s.strip_height} must equal one token row {s.token_px[0]} px")
            if s.max_width <= 0 or s.max_width % s.width_multiple:
                problems.append(f"max_width {s.max_width} must be a positive multiple of {s.width_multiple}")
            if s.global_attn_indexes:
                problems.append(
                    "strip encoders use windowed SAM blocks only (global_attn_indexes must be empty)"
                )
            if c.max_positions < s.max_width // s.token_px[1]:
                problems.append(f"CLIP max_positions {c.max_positions} < tokens of the widest strip")
        if self.tile_tag != "2D":
            problems.append(f"tile_tag {self.tile_tag!r} unsupported (only '2D')")
        if problems:
            raise ValueError("invalid DeepseekOCRConfig: " + "; ".join(problems))

    # ---- config.json I/O -------------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """The official config.json layout; non-official sizes go under vision_config.ocrstream."""
        return _to_hf_dict(self)

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any]) -> DeepseekOCRConfig:
        return _from_hf_dict(raw)

    @classmethod
    def from_json_file(cls, path: str | Path) -> DeepseekOCRConfig:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read model config {path}: {exc}") from exc
        return cls.from_hf_dict(raw)

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_hf_dict(), indent=2) + "\n")

    def replace(self, **kw: Any) -> DeepseekOCRConfig:
        out = copy.deepcopy(self)
        for k, v in kw.items():
            setattr(out, k, v)
        return out


def official_config() -> DeepseekOCRConfig:
    """The released deepseek-ai/DeepSeek-OCR model (3,336,106,240 parameters)."""
    cfg = DeepseekOCRConfig()
    cfg.validate()
    return cfg


def embedded_config(
    vocab_size: int = 2048, image_token_id: int | None = None, **special: int
) -> DeepseekOCRConfig:
    """The small model this repo trains and ships: same architecture, small dims.

    ``vocab_size`` is the project tokenizer's; ``image_token_id`` defaults to the last id. Extra
    keyword arguments set decoder special ids (bos_token_id, eos_token_id, pad_token_id).
    """
    sam = SamConfig(
        img_size=512,
        width=128,
        depth=4,
        heads=4,
        window_size=8,
        global_attn_indexes=(1, 3),
        neck_chans=64,
        downsample_channels=(128, 256),
    )
    clip = ClipConfig(width=256, layers=2, heads=4, image_size=224, patch_size=14)
    dec = DecoderConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=768,
        moe_intermediate_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        max_position_embeddings=2048,
        **special,
    )
    cfg = DeepseekOCRConfig(
        sam=sam,
        clip=clip,
        projector=ProjectorConfig(input_dim=512, n_embed=256),
        decoder=dec,
        image_token_id=vocab_size - 1 if image_token_id is None else image_token_id,
        ngram_whitelist=(),
        default_mode="tiny",
        torch_dtype="float32",
        name="ocrstream-embedded",
    )
    cfg.validate()
    return cfg


def tiny_test_config(vocab_size: int = 96) -> DeepseekOCRConfig:
    """A very small config for unit tests (fast on one CPU thread)."""
    cfg = embedded_config(vocab_size=vocab_size)
    cfg.sam = SamConfig(
        img_size=256,
        width=32,
        depth=3,
        heads=2,
        window_size=5,
        global_attn_indexes=(1,),
        neck_chans=16,
        downsample_channels=(24, 48),
    )
    cfg.clip = ClipConfig(width=48, layers=2, heads=2)
    cfg.projector = ProjectorConfig(input_dim=96, n_embed=64)
    cfg.decoder = DecoderConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=96,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_routed_experts=6,
        n_shared_experts=2,
        num_experts_per_tok=2,
        first_k_dense_replace=1,
        max_position_embeddings=1024,
    )
    cfg.ngram_whitelist = (vocab_size - 3, vocab_size - 2)
    cfg.name = "tiny-test"
    cfg.default_mode = "256"
    cfg.validate()
    return cfg


def tiny_lines_config(vocab_size: int = 96) -> DeepseekOCRConfig:
    """A very small line-strip reader for unit tests (the embedded model's geometry, tiny dims)."""
    cfg = tiny_test_config(vocab_size=vocab_size)
    cfg.sam = SamConfig(
        img_size=32,
        patch_size=2,
        width=32,
        depth=2,
        heads=2,
        window_size=4,
        global_attn_indexes=(),
        neck_chans=16,
        downsample_channels=(24, 48),
        stem_chans=(8, 16),
        strip_height=32,
        max_width=512,
        compress_stride=(2, 1),
    )
    cfg.clip = ClipConfig(width=48, layers=1, heads=2, max_positions=64)
    cfg.ctc_head = True
    cfg.default_mode = "lines"
    cfg.name = "tiny-lines"
    cfg.validate()
    return cfg


PRESETS = {
    "official": official_config,
    "embedded": embedded_config,
    "tiny": tiny_test_config,
    "tiny-lines": tiny_lines_config,
}


# ---- config.json in the official Hugging Face layout ---------------------------------------------
# DeepSeek-V2 decoder fields at top level (repeated under ``language_config``),
# ``vision_config.width.{sam_vit_b,clip-l-14-224}``, ``projector_config``. Sizes the official code
# hard-codes (SAM window, neck, CLIP mlp, ...) and our own settings are written under
# ``vision_config.ocrstream`` only where they differ from official.


def _to_hf_dict(cfg: DeepseekOCRConfig) -> dict[str, Any]:
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
                "ctc_confidence",
                "compression_modes",
            )
            if getattr(cfg, k) != getattr(DeepseekOCRConfig(), k)
        },
    }
    ours = {k: v for k, v in ours.items() if v}
    if ours:
        out["vision_config"]["ocrstream"] = _jsonable(ours)
    return out


def _from_hf_dict(raw: dict[str, Any]) -> DeepseekOCRConfig:
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
