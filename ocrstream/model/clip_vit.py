"""CLIP-L/14 transformer run over the compressed SAM tokens.

Follows the official ``DeepSeek-OCR-vllm/deepencoder/clip_sdpa.py`` (``VitModel``,
``CLIPVisionEmbeddings``, ``NoTPTransformerBlock``): the compressor output is used as the patch
embeddings (the checkpoint's ``patch_embedding`` conv is kept but unused), a CLS vector is
prepended, the 16x16 position grid is resized bicubic/antialias in fp32 (CLS row never),
``pre_layrnorm`` (sic) then pre-norm blocks with fused qkv, quick_gelu MLP, no final norm.
Submodule names equal the checkpoint keys under ``model.vision_model.``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ClipConfig


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.embed_dim = cfg.width
        self.class_embedding = nn.Parameter(torch.randn(cfg.width))
        # Unused by DeepSeek-OCR (tokens come from SAM) but present in the checkpoint.
        self.patch_embedding = nn.Conv2d(
            3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False
        )
        self.max_positions = cfg.max_positions
        self.num_positions = (cfg.max_positions or cfg.pos_grid**2) + 1
        self.position_embedding = nn.Embedding(self.num_positions, cfg.width)
        # Not in the official checkpoint, so never saved.
        self.register_buffer("position_ids", torch.arange(self.num_positions).unsqueeze(0), persistent=False)

    def abs_pos(self, seq_len: int) -> torch.Tensor:
        """Position rows [1, seq_len, C] for 1 CLS + a square grid of seq_len-1 tokens."""
        table = self.position_embedding.weight.unsqueeze(0)  # [1, 1+G*G, C]
        if self.max_positions:  # strips: CLS + the first seq_len-1 positions of a 1-D table
            if seq_len > table.shape[1]:
                raise ValueError(f"{seq_len - 1} tokens exceed CLIP max_positions {self.max_positions}")
            return table[:, :seq_len]
        cls_pos, grid_pos = table[:, :1], table[:, 1:]
        src = int(math.sqrt(grid_pos.shape[1]))
        tgt = int(math.sqrt(seq_len))  # official: sqrt of 1 + h*w, which is h for square grids
        if src != tgt:
            grid = grid_pos.reshape(1, src, src, -1).permute(0, 3, 1, 2).float()  # [1, C, G, G]
            grid = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", antialias=True, align_corners=False)
            grid_pos = grid.to(table.dtype).permute(0, 2, 3, 1).reshape(1, tgt * tgt, -1)
        return torch.cat([cls_pos, grid_pos], dim=1)

    def forward(self, pixel_values: torch.Tensor | None, patch_embeds: torch.Tensor | None) -> torch.Tensor:
        if patch_embeds is None:
            if pixel_values is None:
                raise ValueError("CLIP embeddings need pixel_values or patch_embeds")
            patch_embeds = self.patch_embedding(pixel_values)
        b = patch_embeds.shape[0]
        tokens = patch_embeds.flatten(2).transpose(1, 2)  # [B, h*w, C], row-major
        cls = self.class_embedding.to(tokens.dtype).expand(b, 1, -1)
        x = torch.cat([cls, tokens], dim=1)  # [B, 1+h*w, C]
        return x + self.abs_pos(x.shape[1]).to(x.dtype)


class NoTPAttention(nn.Module):
    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.num_heads = cfg.heads
        self.qkv_proj = nn.Linear(cfg.width, cfg.width * 3)
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, c = x.shape
        qkv = self.qkv_proj(x).view(b, s, 3, self.num_heads, c // self.num_heads)  # split qkv, then heads
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # each [B, nh, S, hd]
        out = F.scaled_dot_product_attention(q, k, v)  # bidirectional, default scale
        return self.out_proj(out.transpose(1, 2).reshape(b, s, c))


class NoTPFeedForward(nn.Module):
    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))  # quick_gelu


class NoTPTransformerBlock(nn.Module):
    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.self_attn = NoTPAttention(cfg)
        self.mlp = NoTPFeedForward(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.self_attn(self.layer_norm1(x))
        return h + self.mlp(self.layer_norm2(h))


class NoTPTransformer(nn.Module):
    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(NoTPTransformerBlock(cfg) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ClipEncoder(nn.Module):
    """(pixels for batch size, SAM tokens [B, C, h, w]) -> hidden states [B, 1+h*w, C]."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = CLIPVisionEmbeddings(cfg)
        self.transformer = NoTPTransformer(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor | None, patch_embeds: torch.Tensor | None) -> torch.Tensor:
        x = self.embeddings(pixel_values, patch_embeds)
        return self.transformer(self.pre_layrnorm(x))
