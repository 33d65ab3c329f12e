"""Partial loading for the serving models: the decoder core without routed experts or encoder,
a shard's experts only, and the encoder weights id streamed from disk."""

from __future__ import annotations

import torch

from ocrstream.model.runtime import OcrModel
from ocrstream.serving.checkpoint import encoder_weights_id_from_checkpoint, load_decoder_core, load_experts
from tests.serving.helpers import fresh_seed, save_tiny_snapshot


def test_partial_loads_match_the_full_model(tmp_path):
    model = save_tiny_snapshot(tmp_path, fresh_seed())
    full = OcrModel.load(tmp_path)
    assert encoder_weights_id_from_checkpoint(tmp_path) == full.weights_id

    core = load_decoder_core(tmp_path)
    for i, layer in enumerate(core.model.layers):
        if model.config.decoder.is_moe_layer(i):
            assert len(layer.mlp.experts) == 0  # held by the shards
            torch.testing.assert_close(
                layer.mlp.gate.weight, model.model.layers[i].mlp.gate.weight, rtol=0, atol=0
            )
    torch.testing.assert_close(core.lm_head.weight, model.lm_head.weight, rtol=0, atol=0)
    assert core.model.sam_model.pos_embed.is_meta  # the encoder is never read

    wanted = {(1, 0), (2, 5)}
    _, experts = load_experts(tmp_path, wanted)
    assert set(experts) == wanted
    ref = model.model.layers[2].mlp.experts[5]
    for got, want in zip(experts[(2, 5)], (ref.gate_proj, ref.up_proj, ref.down_proj), strict=True):
        torch.testing.assert_close(got, want.weight, rtol=0, atol=0)
