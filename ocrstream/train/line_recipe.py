"""The embedded line reader's size and geometry (the official model's classes, small dims).

A view is one text line scaled to ``STRIP_HEIGHT`` px, of any width up to ``MAX_WIDTH``. SAM
gets a two-conv stem (stride 4) and 2x2 patches (8 px per token side, 4 token rows); net_2 and
net_3 stride over rows only, so the compressor gives one row of vision tokens, each 32 px tall
and 8 px wide: about 0.7 characters per vision token at the base rung. CLIP attends over the
whole line; a CTC head reads the vision tokens; the MoE decoder reads them autoregressively.
"""

from __future__ import annotations

from ocrstream.model.config import ClipConfig, DeepseekOCRConfig, ProjectorConfig, SamConfig, embedded_config
from ocrstream.model.lines import STRIP_HEIGHT

MAX_WIDTH = 2048  # px: about 170 characters at the base rung
# Horizontal compression rungs (strip width factor) and their share of training lines: the
# base rung reads; the squeezed ones are the cheaper modes auto mode and forgetting pick from.
SQUEEZES = ((1.0, 0.7), (0.75, 0.15), (0.5, 0.15))
# The rungs measured for the compression curve, most tokens first: the trained ones and between.
LADDER = ("lines", "lines-85", "lines-75", "lines-65", "lines-50", "lines-40")
# Training stages (LineTrainConfig overrides). "base" learns to read from random weights: prose
# and random characters. "docs" continues from base's weights with what technical documents print
# and the base data lacks: typographic quotes, code words inline, code lines in monospace faces.
STAGES = {
    "base": {},
    "docs": {
        "steps": 600,
        "warmup": 100,
        "lr": 5e-4,
        "random_share": 0.3,
        "code_share": 0.2,
        "smart_quotes": 0.5,
        "inline_code": 0.25,
        "eval_every": 250,
    },
}
# How the shipped model reads a strip (runtime settings, applied at export): chosen on validation
# lines with bench/line_decoding.py, never on real documents.
DECODING = {"line_decoding": "guided", "ctc_weight": 0.5, "ctc_confidence": 0.9}


def apply_runtime_settings(cfg: DeepseekOCRConfig) -> None:
    """The recipe's settings that are not weights (default mode, rungs, decoding): set when a run
    starts and again at export, so a checkpoint ships with the recipe as it is now."""
    cfg.default_mode = "lines"
    cfg.compression_modes = LADDER
    for k, v in DECODING.items():
        setattr(cfg, k, v)


def model_config(vocab_size: int, special: dict[str, int]) -> DeepseekOCRConfig:
    cfg = embedded_config(
        vocab_size=vocab_size,
        image_token_id=special["image_token_id"],
        bos_token_id=special["bos_token_id"],
        eos_token_id=special["eos_token_id"],
        pad_token_id=special["pad_token_id"],
    )
    cfg.sam = SamConfig(
        img_size=STRIP_HEIGHT,
        patch_size=2,
        width=96,
        depth=3,
        heads=4,
        window_size=4,
        global_attn_indexes=(),
        neck_chans=64,
        downsample_channels=(128, 192),
        stem_chans=(32, 64),
        strip_height=STRIP_HEIGHT,
        max_width=MAX_WIDTH,
        compress_stride=(2, 1),
    )
    cfg.clip = ClipConfig(width=192, layers=2, heads=4, max_positions=MAX_WIDTH // 8)
    cfg.projector = ProjectorConfig(input_dim=384, n_embed=192)
    d = cfg.decoder
    d.hidden_size = 192
    d.intermediate_size = 512
    d.moe_intermediate_size = 192
    d.num_hidden_layers = 3
    d.num_attention_heads = 4
    d.num_key_value_heads = 4
    d.n_routed_experts = 4
    d.n_shared_experts = 1
    d.num_experts_per_tok = 2
    d.max_position_embeddings = 1024
    cfg.ctc_head = True
    apply_runtime_settings(cfg)
    cfg.name = "ocrstream-embedded"
    cfg.validate()
    return cfg
