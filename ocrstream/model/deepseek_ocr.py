"""The assembled DeepSeek-OCR model: DeepEncoder + MoE decoder + LM head.

Follows HF ``modeling_deepseekocr.py`` (``DeepseekOCRModel`` extends ``DeepseekV2Model`` with
``sam_model``, ``vision_model``, ``projector``, ``image_newline``, ``view_seperator``;
``DeepseekOCRForCausalLM`` adds the untied ``lm_head``) and the official vLLM
``deepseek_ocr.py``. Image embeddings replace the ``<image>`` placeholder ids in order
(masked scatter); positions run over text and image tokens alike; attention is causal everywhere.
The module tree gives exactly the checkpoint names of ``deepseek-ocr-weights.tsv``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .clip_vit import ClipEncoder
from .config import DeepseekOCRConfig
from .deepencoder import ViewFeatures, encode_views, layout_image, layout_strip
from .modes import ImageInput
from .moe_decoder import DeepseekV2Model, KVCache
from .projector import MlpProjector
from .sam_vit import SamEncoder

IGNORE_INDEX = -100


@dataclass
class VisionFeatures:
    """Encoder outputs for a list of images, in input order."""

    embeds: list[torch.Tensor]  # per image [n_placeholders, hidden], prompt layout
    global_views: ViewFeatures | None = None  # when all global views share one size: [n_images, N, *]
    views: list[tuple[int, str, ViewFeatures]] = field(
        default_factory=list
    )  # (image, "global"|"tiles", feats)


@dataclass
class CausalLMOutput:
    logits: torch.Tensor  # [B, T, V] (or [B, 1, V] with last_only)
    loss: torch.Tensor | None = None  # token cross-entropy (+ aux loss when training MoE)
    lm_loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None  # final-normed [B, T, H] when requested
    vision: VisionFeatures | None = None
    cache: KVCache | None = None


class DeepseekOCRModel(DeepseekV2Model):
    def __init__(self, cfg: DeepseekOCRConfig) -> None:
        super().__init__(cfg.decoder)
        self.sam_model = SamEncoder(cfg.sam)
        self.vision_model = ClipEncoder(cfg.clip)
        self.projector = MlpProjector(cfg.projector)
        hidden = cfg.decoder.hidden_size
        std = 1.0 / math.sqrt(hidden)
        self.image_newline = nn.Parameter(torch.randn(hidden) * std)
        self.view_seperator = nn.Parameter(torch.randn(hidden) * std)  # sic: checkpoint spelling


def _flatten_images(images: Sequence) -> list[ImageInput]:
    flat: list[ImageInput] = []
    for item in images:
        if isinstance(item, ImageInput):
            flat.append(item)
        elif isinstance(item, Sequence):
            flat.extend(_flatten_images(item))
        else:
            raise TypeError(f"images must be ImageInput or sequences of them, got {type(item).__name__}")
    return flat


class DeepseekOCRForCausalLM(nn.Module):
    def __init__(self, cfg: DeepseekOCRConfig, init: bool = True) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.model = DeepseekOCRModel(cfg)
        self.lm_head = nn.Linear(cfg.decoder.hidden_size, cfg.decoder.vocab_size, bias=False)
        if cfg.ctc_head:  # per vision token: a character or blank (the pad id); line strips only
            self.ctc_head = nn.Linear(cfg.decoder.hidden_size, cfg.decoder.vocab_size)
        if init and not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    # ---- initialisation (training from scratch) ------------------------------------------
    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                # Kaiming (fan-in): keeps the pixel signal's scale through a conv stem; at std 0.02
                # a two-conv stem passed the ViT ~1/10 of the position embedding's magnitude
                nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="relu")
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, std=std)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, std=std)
            elif isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
        m = self.model
        nn.init.normal_(m.sam_model.pos_embed, std=std)
        for blk in m.sam_model.blocks:
            nn.init.zeros_(blk.attn.rel_pos_h)
            nn.init.zeros_(blk.attn.rel_pos_w)
        for layer in m.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:
                nn.init.normal_(gate.weight, std=std)
        emb = m.vision_model.embeddings
        nn.init.normal_(emb.class_embedding, std=emb.embed_dim**-0.5)
        hidden = self.config.decoder.hidden_size
        nn.init.normal_(m.image_newline, std=hidden**-0.5)
        nn.init.normal_(m.view_seperator, std=hidden**-0.5)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # ---- vision ---------------------------------------------------------------------------
    def encode_pixels(self, pixels: torch.Tensor) -> ViewFeatures:
        """Square views [B, 3, S, S] (normalised) -> per-view features (no layout)."""
        m = self.model
        return encode_views(m.sam_model, m.vision_model, m.projector, pixels.to(self.device, self.dtype))

    def encode_strips(self, pixels: torch.Tensor) -> ViewFeatures:
        """Line strips [B, 3, H, W] (normalised, equal width) -> one token row each [B, n, *]."""
        if not self.config.sam.strips:
            raise ValueError(f"{self.config.name} reads square views, not line strips")
        return self.encode_pixels(pixels)

    def layout_strip(self, tokens: torch.Tensor) -> torch.Tensor:
        """One strip's tokens [n, hidden] -> its prompt embeddings [n + 2, hidden]."""
        return layout_strip(tokens, self.model.image_newline, self.model.view_seperator)

    def ctc_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Vision tokens [..., n, hidden] -> per-token character logits [..., n, vocab] (fp32)."""
        if not self.config.ctc_head:
            raise ValueError(f"{self.config.name} has no CTC head")
        return self.ctc_head(tokens).float()

    def layout(
        self, global_tokens: torch.Tensor, tile_tokens: torch.Tensor | None, grid: tuple[int, int]
    ) -> torch.Tensor:
        return layout_image(
            global_tokens, tile_tokens, grid, self.model.image_newline, self.model.view_seperator
        )

    def encode_images(self, images: Sequence | torch.Tensor) -> VisionFeatures:
        """Encode images -> per-image embedding sequences in prompt layout.

        ``images``: a tensor [B, 3, S, S] of global views (no tiles), or ImageInputs (flat or nested
        per batch row). Views of equal size are encoded in one batch.
        """
        if isinstance(images, torch.Tensor):
            feats = self.encode_pixels(images)
            embeds = [self.layout(feats.projected[i], None, (1, 1)) for i in range(images.shape[0])]
            return VisionFeatures(
                embeds=embeds, global_views=feats, views=[(i, "global", feats) for i in range(len(embeds))]
            )
        flat = _flatten_images(images)
        for img in flat:
            img.validate()
        # Group views by side so each group is one encoder batch.
        groups: dict[int, list[tuple[int, str, torch.Tensor]]] = {}
        for i, img in enumerate(flat):
            groups.setdefault(img.global_view.shape[-1], []).append((i, "global", img.global_view[None]))
            if img.tiles is not None:
                groups.setdefault(img.tiles.shape[-1], []).append((i, "tiles", img.tiles))
        per_image: dict[tuple[int, str], ViewFeatures] = {}
        for items in groups.values():
            feats = self.encode_pixels(torch.cat([t for _, _, t in items], dim=0))
            start = 0
            for i, kind, t in items:
                n = t.shape[0]
                per_image[(i, kind)] = ViewFeatures(
                    sam=feats.sam[start : start + n],
                    clip=feats.clip[start : start + n],
                    projected=feats.projected[start : start + n],
                    side=feats.side,
                )
                start += n
        embeds, views = [], []
        for i, img in enumerate(flat):
            g = per_image[(i, "global")]
            t = per_image.get((i, "tiles"))
            embeds.append(self.layout(g.projected[0], None if t is None else t.projected, img.grid))
            views.append((i, "global", g))
            if t is not None:
                views.append((i, "tiles", t))
        global_views = None
        if flat and len({img.global_view.shape[-1] for img in flat}) == 1:
            gl = [per_image[(i, "global")] for i in range(len(flat))]
            global_views = ViewFeatures(
                sam=torch.cat([v.sam for v in gl]),
                clip=torch.cat([v.clip for v in gl]),
                projected=torch.cat([v.projected for v in gl]),
                side=gl[0].side,
            )
        return VisionFeatures(embeds=embeds, global_views=global_views, views=views)

    # ---- text + image embedding -----------------------------------------------------------
    def embed_inputs(
        self, input_ids: torch.Tensor, image_embeds: Sequence[torch.Tensor] | torch.Tensor | None
    ) -> torch.Tensor:
        """Token embeddings [B, T, H] with image embeddings scattered into `<image>` positions in order."""
        x = self.model.embed_tokens(input_ids)
        is_img = input_ids == self.config.image_token_id
        n_slots = int(is_img.sum())
        if image_embeds is None or (not isinstance(image_embeds, torch.Tensor) and len(image_embeds) == 0):
            if n_slots:
                raise ValueError(
                    f"input_ids hold {n_slots} <image> placeholders but no image embeddings were given"
                )
            return x
        flat = (
            image_embeds if isinstance(image_embeds, torch.Tensor) else torch.cat(list(image_embeds), dim=0)
        )
        if flat.shape[0] != n_slots:
            raise ValueError(
                f"{n_slots} <image> placeholders in input_ids but {flat.shape[0]} image embeddings"
            )
        return x.masked_scatter(is_img[..., None], flat.to(x.dtype))

    # ---- forward --------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        images: Sequence | torch.Tensor | None = None,
        image_embeds: Sequence[torch.Tensor] | torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        return_hidden: bool = False,
        inputs_embeds: torch.Tensor | None = None,
    ) -> CausalLMOutput:
        """Teacher-forced pass. ``labels`` [B, T] are the targets aligned with input_ids (shifted
        inside; -100 ignored; image placeholder positions are never targets). ``inputs_embeds``
        [B, T, H], when given, is used as is (input_ids then only serve the labels mask)."""
        vision = None
        if images is not None:
            if image_embeds is not None:
                raise ValueError("pass images or image_embeds, not both")
            vision = self.encode_images(images)
            image_embeds = vision.embeds
        x = self.embed_inputs(input_ids, image_embeds) if inputs_embeds is None else inputs_embeds
        hidden = self.model.run_decoder(x, attention_mask, position_ids, cache)
        logits = self.lm_head(hidden[:, -1:] if last_only else hidden)
        out = CausalLMOutput(logits=logits, vision=vision, cache=cache)
        if return_hidden:
            out.hidden_states = hidden
        if labels is not None:
            if last_only:
                raise ValueError("labels need full logits (last_only=False)")
            labels = labels.masked_fill(input_ids == self.config.image_token_id, IGNORE_INDEX)
            if attention_mask is not None:
                labels = labels.masked_fill(~attention_mask.bool(), IGNORE_INDEX)
            lm_loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
            out.lm_loss = lm_loss
            out.aux_loss = self.model.aux_loss() if self.training else None
            out.loss = lm_loss if out.aux_loss is None else lm_loss + out.aux_loss
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
