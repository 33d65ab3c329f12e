"""DeepEncoder: SAM -> 16x compressor -> CLIP -> [CLIP | SAM] -> projector, and the image layout.

Follows the official ``DeepSeek-OCR-vllm/deepseek_ocr.py`` (``_pixel_values_to_embedding``) and HF
``modeling_deepseekocr.py`` (``DeepseekOCRModel.forward``): each view is encoded separately; CLIP's
CLS output is dropped; features are concatenated CLIP first, SAM second, then projected. The image
block is: local tiles stitched into one (H_t*h) x (W_t*w) grid with ``image_newline`` after every
row, then the global grid with ``image_newline`` after every row, then ``view_seperator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .clip_vit import ClipEncoder
from .projector import MlpProjector
from .sam_vit import SamEncoder


@dataclass
class ViewFeatures:
    """Per-view encoder outputs for views of one size (all [B, N, *], N = side*side, row-major)."""

    sam: torch.Tensor  # [B, N, C_sam] compressor output
    clip: torch.Tensor  # [B, N, C_clip] CLIP output without CLS
    projected: torch.Tensor  # [B, N, hidden] projector output
    side: int  # grid side (N = side * side); strips: tokens in the one row
    rows: int = 0  # strips: 1 (one token row); 0 = a square side x side grid

    @property
    def compressed(self) -> torch.Tensor:
        """[B, N, C_clip + C_sam]: the projector input (the compressed vision tokens)."""
        return torch.cat([self.clip, self.sam], dim=-1)


def encode_views(
    sam: SamEncoder, clip: ClipEncoder, projector: MlpProjector, pixels: torch.Tensor
) -> ViewFeatures:
    """Square views [B, 3, S, S] -> ViewFeatures with N = (S/64)^2 tokens each; line strips
    [B, 3, H, W] -> one row of W / token width tokens each."""
    feats = sam(pixels)  # [B, C_sam, s, s]; strips [B, C_sam, 1, n]
    side = feats.shape[-1]
    hidden = clip(pixels, feats)  # [B, 1 + s*s, C_clip]
    clip_tok = hidden[:, 1:]  # drop CLS
    sam_tok = feats.flatten(2).transpose(1, 2)  # [B, s*s, C_sam], same row-major order
    projected = projector(torch.cat([clip_tok, sam_tok], dim=-1))  # [B, N, hidden]
    rows = feats.shape[-2] if sam.cfg.strips else 0
    return ViewFeatures(sam=sam_tok, clip=clip_tok, projected=projected, side=side, rows=rows)


def layout_strip(
    tokens: torch.Tensor, image_newline: torch.Tensor, view_seperator: torch.Tensor
) -> torch.Tensor:
    """Prompt-order embeddings [n + 2, hidden] of one line strip: its one token row [n, D], the
    row's ``image_newline`` and the ``view_seperator``, as ``layout_image`` lays out a grid row."""
    d = tokens.shape[-1]
    nl = image_newline.to(tokens.dtype).view(1, d)
    return torch.cat([tokens, nl, view_seperator.to(tokens.dtype).view(1, d)], dim=0)


def layout_image(
    global_tokens: torch.Tensor,
    tile_tokens: torch.Tensor | None,
    grid: tuple[int, int],
    image_newline: torch.Tensor,
    view_seperator: torch.Tensor,
) -> torch.Tensor:
    """Prompt-order embeddings [n_placeholders, hidden] of one image.

    global_tokens [N_g, D] (square grid), tile_tokens [W_t*H_t, N_t, D] row-major tiles or None.
    """
    d = global_tokens.shape[-1]
    nl = image_newline.to(global_tokens.dtype)
    parts = []
    if tile_tokens is not None:
        cols, rows = grid
        n_tiles, n_tok, _ = tile_tokens.shape
        s = int(round(n_tok**0.5))
        if n_tiles != cols * rows or s * s != n_tok:
            raise ValueError(f"tile tokens {tuple(tile_tokens.shape)} do not fit grid {grid}")
        t = tile_tokens.view(rows, cols, s, s, d).permute(0, 2, 1, 3, 4)  # [H_t, h, W_t, w, D]
        t = t.reshape(rows * s, cols * s, d)  # one stitched grid
        t = torch.cat([t, nl.expand(rows * s, 1, d)], dim=1)  # newline after each big row
        parts.append(t.reshape(-1, d))
    gs = int(round(global_tokens.shape[0] ** 0.5))
    if gs * gs != global_tokens.shape[0]:
        raise ValueError(f"global tokens {global_tokens.shape[0]} are not a square grid")
    g = global_tokens.view(gs, gs, d)
    g = torch.cat([g, nl.expand(gs, 1, d)], dim=1)  # [gs, gs+1, D]
    parts.append(g.reshape(-1, d))
    parts.append(view_seperator.to(global_tokens.dtype)[None])
    return torch.cat(parts, dim=0)
