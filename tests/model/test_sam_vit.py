"""SAM windowed ViT against a plain masked full-attention reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ocrstream.model.config import SamConfig
from ocrstream.model.sam_vit import (
    Block,
    SamEncoder,
    resize_abs_pos,
    resize_rel_pos,
    window_partition,
    window_unpartition,
)


def rel_table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """Reference [size, size, hd] table with an explicit loop (interpolating like the official code)."""
    need = 2 * size - 1
    if rel_pos.shape[0] != need:
        rel_pos = F.interpolate(rel_pos.T[None].float(), size=need, mode="linear")[0].T
    out = torch.empty(size, size, rel_pos.shape[1])
    for i in range(size):
        for j in range(size):
            out[i, j] = rel_pos[i - j + size - 1]
    return out


def reference_attention(attn, x: torch.Tensor, ws: int, mask_padding: bool = False) -> torch.Tensor:
    """Full attention over the zero-padded grid, masked to same-window pairs; then cropped.

    ws == 0 means global attention over the unpadded grid.
    """
    b, h, w, c = x.shape
    nh = attn.num_heads
    hd = c // nh
    if ws:
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    else:
        hp, wp = h, w
    tokens = x.reshape(b, hp * wp, c)
    q, k, v = attn.qkv(tokens).reshape(b, hp * wp, 3, nh, hd).permute(2, 0, 3, 1, 4)  # [B, nh, P, hd]
    rows = torch.arange(hp).repeat_interleave(wp)
    cols = torch.arange(wp).repeat(hp)
    if ws:
        same = ((rows[:, None] // ws) == (rows[None] // ws)) & ((cols[:, None] // ws) == (cols[None] // ws))
        lr, lc, ext = rows % ws, cols % ws, ws
    else:
        same = torch.ones(hp * wp, hp * wp, dtype=torch.bool)
        lr, lc, ext = rows, cols, hp
    th = rel_table(attn.rel_pos_h.detach(), ext)  # [ext, ext, hd]
    tw = rel_table(attn.rel_pos_w.detach(), ext)
    rh = th[lr[:, None], lr[None]]  # [P, P, hd]
    rw = tw[lc[:, None], lc[None]]
    bias = torch.einsum("bnqd,qkd->bnqk", q, rh) + torch.einsum("bnqd,qkd->bnqk", q, rw)
    scores = q @ k.transpose(-1, -2) / hd**0.5 + bias
    if mask_padding:
        same = same & ((rows < h) & (cols < w))[None, :]
    scores = scores.masked_fill(~same, float("-inf"))
    out = scores.softmax(-1) @ v  # [B, nh, P, hd]
    out = out.permute(0, 2, 1, 3).reshape(b, hp, wp, c)[:, :h, :w]
    return attn.proj(out)


@pytest.mark.parametrize(("grid", "ws"), [(11, 4), (8, 4), (7, 3), (9, 0)])
def test_block_matches_masked_full_attention(seed, grid, ws):
    cfg = SamConfig(img_size=16 * 6, width=32, depth=1, heads=2, window_size=ws or 4, global_attn_indexes=())
    blk = Block(cfg, ws).eval()
    with torch.no_grad():
        blk.attn.rel_pos_h.normal_(std=0.5)
        blk.attn.rel_pos_w.normal_(std=0.5)
        x = torch.randn(2, grid, grid, 32)
        got = blk(x)
        a = blk.norm1(x)
        h = x + reference_attention(blk.attn, a, ws)
        want = h + blk.mlp(blk.norm2(h))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_padded_window_tokens_are_keys(seed):
    """Padding is not masked: masking the zero pad tokens as keys gives a different result."""
    cfg = SamConfig(img_size=64, width=16, depth=1, heads=2, window_size=4, global_attn_indexes=())
    blk = Block(cfg, 4).eval()
    x = torch.randn(1, 5, 5, 16)  # grid 5 pads to 8
    with torch.no_grad():
        a = blk.norm1(x)
        win, pad_hw = window_partition(a, 4)
        got = window_unpartition(blk.attn(win), 4, pad_hw, (5, 5))
        unmasked = reference_attention(blk.attn, a, 4)
        masked = reference_attention(blk.attn, a, 4, mask_padding=True)
    torch.testing.assert_close(got, unmasked, atol=2e-5, rtol=1e-4)
    assert (masked - unmasked).abs().max() > 1e-3


def test_rel_pos_interpolation_linear(seed):
    table = torch.randn(9, 6)  # built for extent 5
    got = resize_rel_pos(table, 8, 8)  # needs 15 rows
    assert got.shape == (8, 8, 6)
    interp = F.interpolate(table.T[None], size=15, mode="linear", align_corners=False)[0].T
    assert torch.equal(got[7, 0], interp[14])
    assert torch.equal(got[0, 7], interp[0])
    # unchanged length: plain indexing
    torch.testing.assert_close(resize_rel_pos(table, 5, 5)[2, 4], table[2 - 4 + 4])


def test_abs_pos_bicubic_antialias_fp32(seed):
    pos = torch.randn(1, 8, 8, 4, dtype=torch.bfloat16)
    got = resize_abs_pos(pos, 5)
    want = F.interpolate(pos.float().permute(0, 3, 1, 2), size=(5, 5), mode="bicubic", antialias=True)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want.to(torch.bfloat16).permute(0, 2, 3, 1))
    assert resize_abs_pos(pos, 8) is pos


@pytest.mark.parametrize("side", [128, 192, 256])
def test_sam_encoder_shapes(seed, side):
    cfg = SamConfig(
        img_size=256,
        width=32,
        depth=2,
        heads=2,
        window_size=5,
        global_attn_indexes=(1,),
        neck_chans=16,
        downsample_channels=(24, 40),
    )
    enc = SamEncoder(cfg).eval()
    out = enc(torch.randn(2, 3, side, side))
    assert out.shape == (2, 40, side // 64 if side % 64 == 0 else -(-side // 64), -(-side // 64))
    with pytest.raises(ValueError, match="square"):
        enc(torch.randn(1, 3, 128, 64))
