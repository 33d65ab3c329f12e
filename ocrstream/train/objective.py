"""Training objective for the embedded model: AR cross-entropy + a non-autoregressive reading head.

The decoder is the model's own (``DeepseekOCRForCausalLM``); only the attention mask differs, so
the layers are called directly here instead of adding a training mode to the model code.

One sequence per row: ``[prefix P][AR inputs L-1][reading queries L]``.
* AR part: ordinary causal LM over prefix + target (inputs optionally corrupted).
* Reading queries: query k has the input vector ``query`` (a training-only parameter), the RoPE
  position of target slot k, and attends to the prefix and itself only. It must predict target k
  from the image alone, which is what keeps the vision path alive (the calibration run collapsed
  into a pure language model without it).
* Alignment guide: one head in each of the upper decoder layers is told which vision token shows
  the token being predicted (its attention over the image placeholders, cross-entropy against
  the cell). The decoder otherwise has to discover reading order by itself, and the small one
  read the first words and then drifted into language-model text.
* Vision-diversity penalty: the share of projected vision-token variance that varies across the
  images of the batch must stay above a floor (it fell to 5e-6 in the collapsed run).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ocrstream.kernels import dispatch
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.moe_decoder import rotary_cos_sin
from ocrstream.train.batches import GLYPH_CLASSES, IGNORE, Batch


@dataclass
class LossParts:
    total: torch.Tensor
    ar: torch.Tensor
    read: torch.Tensor
    var_pen: torch.Tensor
    aux: torch.Tensor
    cell: torch.Tensor
    glyph: torch.Tensor
    glyph_acc: float
    cell_glyph: torch.Tensor
    cell_glyph_acc: float
    guide: torch.Tensor
    guide_acc: float
    image_frac: float
    ar_acc: float
    read_acc: float
    n_tokens: int


CELL_PATCHES = 16  # 4x4 SAM patches per compressed vision token (the 16x compressor)
GUIDE_HEAD = 0  # the guided head of each guided layer; the others attend freely


def cell_slots(grid: int) -> torch.Tensor:
    """Image-placeholder index of each cell (row-major): rows end with an image_newline token,
    as ``layout_image`` lays out a global view."""
    r, c = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return (r * (grid + 1) + c).reshape(-1)


def cell_major(patch_targets: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, grid*grid, C] row-major patches -> [B, (grid/4)^2 cells, 16 patches, C], each cell's
    patches row-major, in the vision tokens' order."""
    b, _, c = patch_targets.shape
    q = grid // 4
    t = patch_targets.reshape(b, q, 4, q, 4, c).permute(0, 1, 3, 2, 4, 5)  # [B, qr, qc, 4, 4, C]
    return t.reshape(b, q * q, CELL_PATCHES, c)


def balanced_glyph_ce(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Soft CE over [..., C] with inked and empty positions weighed the same; accuracy on inked."""
    ce = -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1)
    inked = target[..., 0] < 1  # positions with a glyph centre
    # empty positions outnumber glyphs 20:1 on sparse pages
    loss = ce[~inked].mean() if (~inked).any() else torch.zeros(())
    acc = 0.0
    if inked.any():
        loss = loss + ce[inked].mean()
        hit = target.gather(-1, logits.argmax(-1, keepdim=True)).squeeze(-1) > 0
        acc = float(hit[inked].float().mean())
    return loss, acc


class Trainee(nn.Module):
    """The shipped model plus training-only parts (the reading query vector)."""

    def __init__(self, model: DeepseekOCRForCausalLM) -> None:
        super().__init__()
        self.model = model
        hidden = model.config.decoder.hidden_size
        self.read_query = nn.Parameter(torch.randn(hidden) * hidden**-0.5)
        # patch-level glyph classifier on the SAM neck output (training only, not shipped)
        sam = model.model.sam_model
        self.glyph_head = nn.Conv2d(model.config.sam.neck_chans, GLYPH_CLASSES, kernel_size=1)
        # per vision token: the glyph class of each patch of its cell, in order (training only)
        hidden = model.config.decoder.hidden_size
        self.cell_glyph_head = nn.Linear(hidden, CELL_PATCHES * GLYPH_CLASSES)
        self._neck: torch.Tensor | None = None
        sam.neck.register_forward_hook(self._keep_neck)
        # inputs of the guided attention layers (all but the first, which sees no context yet)
        self.guided = list(range(1, len(model.model.layers)))
        self._attn_in: dict[int, tuple] = {}
        for i in self.guided:
            model.model.layers[i].self_attn.register_forward_pre_hook(self._keeper(i))

    def _keeper(self, i: int):  # noqa: ANN202
        def keep(module: nn.Module, args: tuple) -> None:  # noqa: ARG001
            self._attn_in[i] = args[:3]  # normed x [B, T, H], cos, sin

        return keep

    def guide_logits(self, layer: int, q_pos: slice, k_pos: torch.Tensor) -> torch.Tensor:
        """Attention logits [B, Q, K] of the guided head of ``layer`` from positions ``q_pos`` to
        the key positions ``k_pos``, recomputed from the captured layer input."""
        attn = self.model.model.layers[layer].self_attn
        x, cos, sin = self._attn_in[layer]
        b, t, _ = x.shape
        hd, h = attn.head_dim, GUIDE_HEAD
        q = attn.q_proj(x).view(b, t, attn.num_heads, hd)[:, :, h : h + 1].transpose(1, 2)
        kv_h = h // (attn.num_heads // attn.num_kv)
        k = attn.k_proj(x).view(b, t, attn.num_kv, hd)[:, :, kv_h : kv_h + 1].transpose(1, 2)
        q, k = dispatch.apply_rotary(q, k, cos, sin)
        return (q[:, 0, q_pos] @ k[:, 0, k_pos].transpose(-1, -2)) * hd**-0.5

    def _keep_neck(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:  # noqa: ARG002
        self._neck = out  # [B, neck, S/16, S/16]

    def decoder(self, x: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        dm = self.model.model
        cos, sin = rotary_cos_sin(positions, dm.dcfg.head_dim, dm.dcfg.rope_theta, x.dtype)
        for layer in dm.layers:
            x = layer(x, cos, sin, mask, None)
        return dm.norm(x)


def build_mask(p: int, l_ar: int, l_q: int, ar_valid: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, T, T] (True = may attend) for [prefix p][AR l_ar][queries l_q]."""
    b = ar_valid.shape[0]
    t = p + l_ar + l_q
    dev = ar_valid.device
    idx = torch.arange(t, device=dev)
    causal = idx[None, :] <= idx[:, None]  # [T, T]
    m = torch.zeros(t, t, dtype=torch.bool, device=dev)
    n_ctx = p + l_ar
    m[:n_ctx, :n_ctx] = causal[:n_ctx, :n_ctx]
    m[n_ctx:, :p] = True  # queries see the prefix (BOS, image, prompt)
    m[n_ctx:, n_ctx:] = torch.eye(l_q, dtype=torch.bool, device=dev)  # ... and themselves
    key_ok = torch.ones(b, t, dtype=torch.bool, device=dev)
    key_ok[:, p:n_ctx] = ar_valid
    mask = m[None] & key_ok[:, None, :]
    mask = mask | torch.eye(t, dtype=torch.bool, device=dev)[None]  # never an empty row
    return mask[:, None]


def image_fraction(tokens: torch.Tensor) -> torch.Tensor:
    """Share of the variance of vision tokens [B, N, D] that differs between images."""
    between = tokens.var(dim=0, unbiased=False).mean()  # across images, per position/dim
    total = tokens.reshape(-1, tokens.shape[-1]).var(dim=0, unbiased=False).mean()
    return between / (total + 1e-8)


def compute_loss(
    tr: Trainee,
    batch: Batch,
    *,
    ar_inputs: torch.Tensor | None = None,
    pixels: torch.Tensor | None = None,
    read_weight: float = 1.0,
    var_weight: float = 1.0,
    var_floor: float = 0.3,
    aux_weight: float = 1.0,
    cell_weight: float = 1.0,
    glyph_weight: float = 0.0,
    guide_weight: float = 0.0,
    with_read: bool = True,
) -> LossParts:
    model = tr.model
    cfg = model.config
    feats = model.encode_pixels(batch.pixels if pixels is None else pixels)
    emb = [model.layout(feats.projected[i], None, (1, 1)) for i in range(feats.projected.shape[0])]
    image_embeds = torch.stack(emb)  # [B, n_img, H]
    b, p = batch.prefix_ids.shape
    tgt = batch.targets  # [B, L] with IGNORE padding
    ell = tgt.shape[1]
    ar_in = tgt[:, :-1].clamp_min(0) if ar_inputs is None else ar_inputs  # [B, L-1]
    ar_valid = tgt[:, :-1] != IGNORE
    x_prefix = model.model.embed_tokens(batch.prefix_ids)
    is_img = batch.prefix_ids == cfg.image_token_id
    x_prefix = x_prefix.masked_scatter(is_img[..., None], image_embeds.reshape(-1, image_embeds.shape[-1]))
    parts = [x_prefix, model.model.embed_tokens(ar_in)]
    l_q = ell if with_read else 0
    if with_read:
        parts.append(tr.read_query.to(x_prefix.dtype).expand(b, l_q, -1))
    x = torch.cat(parts, dim=1)
    pos_ctx = torch.arange(p + ell - 1)
    pos_q = torch.arange(p, p + l_q) - 1  # query k sits where the AR logit for target k sits
    positions = torch.cat([pos_ctx, pos_q])[None].expand(b, -1)
    mask = build_mask(p, ell - 1, l_q, ar_valid)
    h = tr.decoder(x, mask, positions)
    logits_ar = model.lm_head(h[:, p - 1 : p + ell - 1])  # [B, L, V] predicts tgt
    ar = F.cross_entropy(
        logits_ar.float().reshape(-1, logits_ar.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE
    )
    valid = tgt != IGNORE
    n_tok = int(valid.sum())
    ar_acc = float(((logits_ar.argmax(-1) == tgt) & valid).sum()) / max(1, n_tok)
    if with_read:
        logits_rd = model.lm_head(h[:, p + ell - 1 :])
        read = F.cross_entropy(
            logits_rd.float().reshape(-1, logits_rd.shape[-1]), tgt.reshape(-1), ignore_index=IGNORE
        )
        read_acc = float(((logits_rd.argmax(-1) == tgt) & valid).sum()) / max(1, n_tok)
    else:
        read = torch.zeros((), dtype=ar.dtype)
        read_acc = 0.0
    frac = image_fraction(feats.projected) if b > 1 else torch.ones(())
    var_pen = F.relu(var_floor - frac)
    aux = model.model.aux_loss() if model.training else None
    aux = torch.zeros(()) if aux is None else aux
    cell = torch.zeros(())
    if batch.cell_targets is not None and cell_weight > 0 and pixels is None:
        # per-vision-token bag of tokens through the model's own final norm + LM head, so vision
        # tokens land near the output embeddings of the text they show (easy for the decoder to use)
        tgt_cells = batch.cell_targets  # [B, N, V]
        has = tgt_cells.sum(-1) > 0  # [B, N]
        if has.any():
            logp = torch.log_softmax(model.lm_head(model.model.norm(feats.projected)).float(), dim=-1)
            cell = -(tgt_cells * logp).sum(-1)[has].mean()
    glyph, glyph_acc = torch.zeros(()), 0.0
    cell_glyph, cell_glyph_acc = torch.zeros(()), 0.0
    if batch.glyph_targets is not None and glyph_weight > 0 and pixels is None and tr._neck is not None:
        g_logits = tr.glyph_head(tr._neck).flatten(2).transpose(1, 2)  # [B, G*G, C]
        glyph, glyph_acc = balanced_glyph_ce(g_logits, batch.glyph_targets)
        # the same glyphs read back from each projected vision token, in patch order: the token
        # must carry its cell's characters and where they are, which is what the decoder reads
        grid = tr._neck.shape[-1]
        n = feats.projected.shape[1]
        c_logits = tr.cell_glyph_head(feats.projected).reshape(b, n, CELL_PATCHES, -1)
        cell_glyph, cell_glyph_acc = balanced_glyph_ce(c_logits, cell_major(batch.glyph_targets, grid))
    guide, guide_acc = torch.zeros(()), 0.0
    if batch.token_cells is not None and guide_weight > 0 and pixels is None:
        img_pos = is_img[0].nonzero().squeeze(-1)  # the same prompt layout in every row
        slots = cell_slots(int(round(feats.projected.shape[1] ** 0.5))).to(img_pos.device)
        want = batch.token_cells  # [B, L]
        ok = want != IGNORE
        if ok.any():
            tgt_slot = slots[want.clamp_min(0)]
            accs = []
            for layer in tr.guided:
                lg = tr.guide_logits(layer, slice(p - 1, p + ell - 1), img_pos).float()  # [B, L, K]
                guide = guide + F.cross_entropy(lg[ok], tgt_slot[ok]) / len(tr.guided)
                accs.append(float((lg.argmax(-1) == tgt_slot)[ok].float().mean()))
            guide_acc = max(accs)
    total = ar + read_weight * read + var_weight * var_pen + aux_weight * aux + cell_weight * cell
    total = total + glyph_weight * (glyph + cell_glyph) + guide_weight * guide
    return LossParts(
        total,
        ar,
        read,
        var_pen,
        aux,
        cell,
        glyph,
        glyph_acc,
        cell_glyph,
        cell_glyph_acc,
        guide,
        guide_acc,
        float(frac.detach()),
        ar_acc,
        read_acc,
        n_tok,
    )


@torch.no_grad()
def image_gap(tr: Trainee, batch: Batch) -> dict[str, float]:
    """Teacher-forced AR CE (nats/token) with the real image, a blank page and another page's image."""
    was = tr.training
    tr.eval()
    real = compute_loss(tr, batch, with_read=False).ar.item()
    blank = compute_loss(tr, batch, pixels=torch.ones_like(batch.pixels), with_read=False).ar.item()
    other = compute_loss(tr, batch, pixels=batch.pixels.roll(1, dims=0), with_read=False).ar.item()
    tr.train(was)
    return {
        "ce_real": real,
        "ce_blank": blank,
        "ce_other": other,
        "gap_blank": blank - real,
        "gap_other": other - real,
    }
