"""Assembled model: encoder fusion order, image layout, scatter and the teacher-forced loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ocrstream.model.clip_vit import ClipEncoder
from ocrstream.model.config import ClipConfig, embedded_config
from ocrstream.model.deepencoder import layout_image
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.modes import ImageInput, Mode, preprocess


def test_layout_order_local_then_global_then_separator(seed):
    d = 3
    g = torch.arange(4 * d, dtype=torch.float32).view(4, d) + 1000  # 2x2 global grid
    tiles = torch.arange(6 * 4 * d, dtype=torch.float32).view(6, 4, d)  # 3 cols x 2 rows, 2x2 each
    nl, sep = torch.full((d,), -1.0), torch.full((d,), -2.0)
    out = layout_image(g, tiles, (3, 2), nl, sep)
    assert out.shape[0] == (2 * 2) * (3 * 2 + 1) + 2 * 3 + 1
    big = out[: 4 * 7].view(4, 7, d)
    assert torch.equal(big[:, 6], nl.expand(4, d))
    for r in range(4):
        for c in range(6):
            tile = (r // 2) * 3 + c // 2  # row-major tile index
            assert torch.equal(big[r, c], tiles[tile, (r % 2) * 2 + c % 2])
    glob = out[28:34].view(2, 3, d)
    assert torch.equal(glob[:, :2].reshape(4, d), g) and torch.equal(glob[:, 2], nl.expand(2, d))
    assert torch.equal(out[-1], sep)


def test_projector_input_is_clip_then_sam(tiny_model):
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        f = tiny_model.encode_pixels(x)
        proj = tiny_model.model.projector.layers
        c_clip = tiny_model.config.clip.width
        want = (
            F.linear(f.clip, proj.weight[:, :c_clip]) + F.linear(f.sam, proj.weight[:, c_clip:]) + proj.bias
        )
        sam = tiny_model.model.sam_model(x).flatten(2).transpose(1, 2)
    torch.testing.assert_close(f.projected, want, atol=1e-5, rtol=1e-4)
    assert torch.equal(f.sam, sam)
    assert f.compressed.shape == (2, 4, c_clip + sam.shape[-1])


def test_clip_cls_position_never_interpolated(seed):
    enc = ClipEncoder(ClipConfig(width=16, layers=1, heads=2)).eval()
    pos = enc.embeddings.abs_pos(1 + 25)
    assert pos.shape == (1, 26, 16)
    assert torch.equal(pos[0, 0], enc.embeddings.position_embedding.weight[0])
    assert torch.equal(enc.embeddings.abs_pos(257)[0], enc.embeddings.position_embedding.weight)
    assert "embeddings.position_ids" not in enc.state_dict()


def test_tensor_and_imageinput_paths_agree(tiny_model):
    pix = torch.randn(2, 3, 128, 128)
    a = tiny_model.encode_images(pix)
    inputs = [ImageInput(pix[i], None, (1, 1), "t", (128, 128)) for i in range(2)]
    b = tiny_model.encode_images([[inputs[0]], [inputs[1]]])
    for x, y in zip(a.embeds, b.embeds, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    assert a.embeds[0].shape == (2 * 3 + 1, 64)
    assert b.global_views.projected.shape == (2, 4, 64)


def test_forward_loss_and_scatter(tiny_model):
    cfg = tiny_model.config
    mode = Mode("t", 128, 128, True, no_tile_max=128)
    from PIL import Image

    img = preprocess(Image.new("RGB", (300, 140), (90, 90, 200)), mode)
    n = img.num_placeholders
    ids = torch.tensor([[0] + [cfg.image_token_id] * n + [5, 6, 7, 1]])
    labels = ids.clone()
    out = tiny_model(ids, images=[img], labels=labels)
    assert out.logits.shape == (1, ids.shape[1], cfg.decoder.vocab_size)
    # only the 4 text targets after the image count
    logits = out.logits[0, n:-1]
    want = F.cross_entropy(logits, ids[0, n + 1 :])
    torch.testing.assert_close(out.loss, want)
    out.loss.backward()
    assert tiny_model.model.sam_model.patch_embed.proj.weight.grad is not None
    assert tiny_model.model.image_newline.grad is not None
    with pytest.raises(ValueError, match="placeholders"):
        tiny_model(ids[:, 2:], images=[img])


def test_training_mode_adds_aux_loss(tiny_model):
    tiny_model.train()
    ids = torch.randint(3, 90, (2, 9))
    out = tiny_model(ids, labels=ids)
    assert out.aux_loss is not None and torch.allclose(out.loss, out.lm_loss + out.aux_loss)


def test_embedded_preset_builds_and_runs(seed):
    cfg = embedded_config(vocab_size=300, image_token_id=299)
    model = DeepseekOCRForCausalLM(cfg).eval()
    pix = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        v = model.encode_images(pix)
    assert v.embeds[0].shape == (4 * 5 + 1, cfg.decoder.hidden_size)


@pytest.mark.parametrize(
    ("mode", "size"), [("gundam", (1191, 1684)), ("base", (800, 600)), ("large", (900, 900))]
)
def test_official_encoder_shapes_on_meta_device(mode, size):
    """Official dims end to end (pos/rel-pos interpolation paths included) without allocating."""
    from ocrstream.model.config import official_config
    from ocrstream.model.modes import get_mode, num_vision_tokens, tile_grid
    from ocrstream.model.weights import build_meta_model

    m = build_meta_model(official_config()).eval()
    m.model.vision_model.embeddings.position_ids = torch.arange(257, device="meta")[None]
    md = get_mode(mode)
    cols, rows = tile_grid(md, *size)
    tiles = (
        torch.empty(cols * rows, 3, md.image_size, md.image_size, device="meta") if cols * rows > 1 else None
    )
    img = ImageInput(
        torch.empty(3, md.base_size, md.base_size, device="meta"), tiles, (cols, rows), mode, size
    )
    with torch.no_grad():
        v = m.encode_images([img])
    assert v.embeds[0].shape == (num_vision_tokens(mode, *size), 1280)
    assert v.global_views.compressed.shape == (1, (md.base_size // 64) ** 2, 2048)
