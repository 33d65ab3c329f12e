"""SAM ViT-B/16 image encoder with the DeepSeek-OCR neck and 16x token compressor.

Follows the official ``DeepSeek-OCR-vllm/deepencoder/sam_vary_sdpa.py`` (``ImageEncoderViT`` built
by ``build_sam_vit_b``): windowed blocks with zero-padded, unmasked windows; global blocks at
``global_attn_indexes``; MViTv2 decomposed relative position bias computed from the unscaled q and
passed to SDPA as an additive mask; absolute position table resized bicubic/antialias in fp32;
neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) then ``net_2``/``net_3`` stride-2 convs.
Submodule names equal the checkpoint keys under ``model.sam_model.``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ocrstream.kernels import dispatch

from .config import SamConfig


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a [B, C, H, W] map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # [B, H, W, C]


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.gelu(self.lin1(x)))  # exact (erf) GELU


def resize_rel_pos(rel_pos: torch.Tensor, q_size: int, k_size: int) -> torch.Tensor:
    """Relative-position rows R[q, k] of shape [q_size, k_size, head_dim].

    The stored table is resized with 1-D linear interpolation (fp32) when its length differs
    from 2*max(q, k)-1; the row index is (q - k) + (k_size - 1), scaled when sizes differ.
    """
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(
            rel_pos.float().reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),  # [1, hd, L]
            size=max_rel_dist,
            mode="linear",
        )
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0).to(rel_pos.dtype)  # [L', hd]
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def decomposed_rel_pos(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_hw: tuple[int, int],
    k_hw: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column terms (rel_h [B, qh*qw, kh], rel_w [B, qh*qw, kw]) from the unscaled q [B, qh*qw, hd].

    The additive bias for key (i, j) is rel_h[..., i] + rel_w[..., j].
    """
    qh, qw = q_hw
    kh, kw = k_hw
    rh = resize_rel_pos(rel_pos_h, qh, kh)  # [qh, kh, hd]
    rw = resize_rel_pos(rel_pos_w, qw, kw)  # [qw, kw, hd]
    b, _, dim = q.shape
    r_q = q.reshape(b, qh, qw, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)  # [B, qh, qw, kh]
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)  # [B, qh, qw, kw]
    return rel_h.reshape(b, qh * qw, kh), rel_w.reshape(b, qh * qw, kw)


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_hw: tuple[int, int],
    k_hw: tuple[int, int],
) -> torch.Tensor:
    """Additive attention bias [B, qh*qw, kh*kw] from the unscaled q [B, qh*qw, hd]."""
    rel_h, rel_w = decomposed_rel_pos(q, rel_pos_h, rel_pos_w, q_hw, k_hw)
    b, n, kh = rel_h.shape
    return (rel_h[:, :, :, None] + rel_w[:, :, None, :]).reshape(b, n, kh * rel_w.shape[-1])


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, rel_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = heads
        head_dim = dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        nh = self.num_heads
        # [3, B, nh, HW, hd]: q rows of all heads first, then k, then v
        qkv = self.qkv(x).reshape(b, h * w, 3, nh, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, nh, HW, hd]
        rel_h, rel_w = decomposed_rel_pos(
            q.reshape(b * nh, h * w, -1), self.rel_pos_h, self.rel_pos_w, (h, w), (h, w)
        )
        # SDPA with bias rel_h[.., i] + rel_w[.., j] for key (i, j), default 1/sqrt(hd) scale;
        # the reference on CPU, a fused Triton kernel on CUDA (kernels/window_attention.py).
        out = dispatch.window_attention(
            q, k, v, rel_h.view(b, nh, h * w, h).to(q.dtype), rel_w.view(b, nh, h * w, w).to(q.dtype)
        )
        out = out.view(b, nh, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


def window_partition(x: torch.Tensor, ws: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """[B, H, W, C] -> ([B*nW, ws, ws, C], (Hp, Wp)); zero-pads bottom/right to a multiple of ws."""
    b, h, w, c = x.shape
    pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # padded tokens stay unmasked (SAM behaviour)
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, ws: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """[B*nW, ws, ws, C] -> [B, H, W, C], cropping the padding."""
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // ((hp // ws) * (wp // ws))
    x = windows.view(b, hp // ws, wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, -1)[:, :h, :w, :].contiguous()


class Block(nn.Module):
    def __init__(self, cfg: SamConfig, window_size: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        rel = (window_size, window_size) if window_size > 0 else (cfg.pos_grid, cfg.pos_grid)
        self.attn = Attention(cfg.width, cfg.heads, rel)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = MLPBlock(cfg.width, int(cfg.width * cfg.mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


def conv_stem(in_chans: int, chans: tuple[int, ...]) -> nn.Sequential:
    """3x3 stride-2 convs with GELU: local edge and stroke features before the patch embedding,
    which small from-scratch ViTs learn poorly from raw patches."""
    layers: list[nn.Module] = []
    for c in chans:
        layers += [nn.Conv2d(in_chans, c, kernel_size=3, stride=2, padding=1), nn.GELU()]
        in_chans = c
    return nn.Sequential(*layers)


def resize_abs_pos(pos: torch.Tensor, size: int) -> torch.Tensor:
    """[1, G, G, C] table -> [1, size, size, C]; bicubic + antialias in fp32, cast back."""
    if pos.shape[1] == size:
        return pos
    out = F.interpolate(
        pos.float().permute(0, 3, 1, 2),  # [1, C, G, G]
        size=(size, size),
        mode="bicubic",
        antialias=True,
        align_corners=False,
    )
    return out.to(pos.dtype).permute(0, 2, 3, 1)


class SamEncoder(nn.Module):
    """Pixels [B, 3, S, S] -> compressed tokens [B, out_chans, S/64, S/64].

    Line-strip configs (``strip_height``) take [B, 3, strip_height, W] and give one token row
    [B, out_chans, 1, W / token_px[1]]: an optional conv stem, windowed blocks only, and net_2 /
    net_3 striding over rows only, so each vision token is one line tall and a glyph or so wide.
    """

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.stem_chans:
            self.stem = conv_stem(cfg.in_chans, cfg.stem_chans)
        embed_in = cfg.stem_chans[-1] if cfg.stem_chans else cfg.in_chans
        self.patch_embed = PatchEmbed(cfg.patch_size, embed_in, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, *cfg.pos_shape, cfg.width))
        self.blocks = nn.ModuleList(
            Block(cfg, 0 if i in cfg.global_attn_indexes else cfg.window_size) for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.width, cfg.neck_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.neck_chans, eps=1e-6),
            nn.Conv2d(cfg.neck_chans, cfg.neck_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.neck_chans, eps=1e-6),
        )
        c2, c3 = cfg.downsample_channels
        st = tuple(cfg.compress_stride)
        self.net_2 = nn.Conv2d(cfg.neck_chans, c2, kernel_size=3, stride=st, padding=1, bias=False)
        self.net_3 = nn.Conv2d(c2, c3, kernel_size=3, stride=st, padding=1, bias=False)

    def check_strips(self, pixels: torch.Tensor) -> None:
        cfg = self.cfg
        if pixels.dim() != 4 or pixels.shape[2] != cfg.strip_height:
            raise ValueError(f"SAM expects strips [B, 3, {cfg.strip_height}, W], got {tuple(pixels.shape)}")
        w = pixels.shape[3]
        if w <= 0 or w % cfg.width_multiple or w > cfg.max_width:
            raise ValueError(
                f"strip width {w} must be a multiple of {cfg.width_multiple} and at most {cfg.max_width}"
            )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.cfg.strips:
            self.check_strips(pixels)
        elif pixels.dim() != 4 or pixels.shape[2] != pixels.shape[3]:
            raise ValueError(f"SAM expects square views [B, 3, S, S], got {tuple(pixels.shape)}")
        x = self.stem(pixels) if self.cfg.stem_chans else pixels
        x = self.patch_embed(x)  # [B, S/16, S/16, C]; strips [B, rows, W/stride, C]
        if self.cfg.strips:
            x = x + self.pos_embed[:, :, : x.shape[2]]  # crop: a column keeps its position
        else:
            x = x + resize_abs_pos(self.pos_embed, x.shape[1])
        for blk in self.blocks:
            x = blk(x)
        x = self.neck(x.permute(0, 3, 1, 2))  # [B, neck, S/16, S/16]
        return self.net_3(self.net_2(x))  # [B, out, S/64, S/64]
