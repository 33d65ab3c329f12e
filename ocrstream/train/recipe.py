"""The embedded model's size and view geometry (same classes as the official model, small dims)."""

from __future__ import annotations

from ocrstream.model.config import ClipConfig, DeepseekOCRConfig, ProjectorConfig, SamConfig, embedded_config
from ocrstream.model.modes import Mode, num_encoder_tokens, num_vision_tokens

TILE = 256  # view side in pixels: 4x4 = 16 vision tokens per view
# Modes rows for the embedded model, passed per request (modes API); not the official table.
EMBEDDED_TILE = Mode("embedded-tile", TILE, TILE, False)


def n_placeholders(side: int = TILE) -> int:
    return num_vision_tokens(Mode("v", side, side, False), side, side)


def n_vision_tokens(side: int = TILE) -> int:
    return num_encoder_tokens(Mode("v", side, side, False), side, side)


def model_config(vocab_size: int, special: dict[str, int]) -> DeepseekOCRConfig:
    """~5M parameters: sized so one training page costs ~0.2 s on one shared CPU core."""
    cfg = embedded_config(
        vocab_size=vocab_size,
        image_token_id=special["image_token_id"],
        bos_token_id=special["bos_token_id"],
        eos_token_id=special["eos_token_id"],
        pad_token_id=special["pad_token_id"],
    )
    cfg.sam = SamConfig(
        img_size=TILE,  # position table at the view size: no interpolation at train time
        width=96,
        depth=4,
        heads=4,
        window_size=8,
        global_attn_indexes=(1, 3),
        neck_chans=64,
        downsample_channels=(128, 192),
    )
    cfg.clip = ClipConfig(width=192, layers=1, heads=4)
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
    d.max_position_embeddings = 2048
    cfg.name = "ocrstream-embedded"
    cfg.validate()
    return cfg
