"""Training batches: rendered pages -> pixels, prompt + target ids, and the reading-head layout.

Sequence of one row (the same prompt the runtime builds for "free_ocr", official section 11.2):
``[BOS] <image>*n "\\nFree OCR." | target ids + EOS``. For training we append, after the
autoregressive (AR) part, one *reading query* per target token: a position-only input whose
attention sees the image prefix and itself but no text, so it can only be right by reading.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

from ocrstream.data.render import Page

FREE_OCR_PROMPT = "\nFree OCR."
IGNORE = -100


@dataclass
class Batch:
    pixels: torch.Tensor  # [B, 3, S, S] in [-1, 1]
    prefix_ids: torch.Tensor  # [B, P] BOS, image placeholders, prompt
    targets: torch.Tensor  # [B, L] target ids + EOS, right-padded with IGNORE
    lengths: torch.Tensor  # [B] real target lengths
    texts: list[str]
    levels: list[int]
    cell_targets: torch.Tensor | None = None  # [B, N, V] token distribution per vision-token cell
    glyph_targets: torch.Tensor | None = None  # [B, G*G, GLYPH_CLASSES] characters per SAM patch
    token_cells: torch.Tensor | None = None  # [B, L] vision-token cell showing target k, or IGNORE

    @property
    def size(self) -> int:
        return self.pixels.shape[0]


def at_view(page: Page, side: int) -> Page:
    """``page`` as a smaller ladder mode sees it: stretched to ``side`` px as ``modes.preprocess``
    does for a non-tiled mode, with no per-token geometry (the labels are for the rendered size)."""
    if page.image.size == (side, side):
        return page
    return replace(page, image=page.image.resize((side, side), Image.Resampling.BICUBIC), spans=[])


def pixels_from_pages(pages: Sequence[Page]) -> torch.Tensor:
    arr = np.stack([np.asarray(p.image.convert("RGB"), dtype=np.float32) for p in pages])  # [B, S, S, 3]
    t = torch.from_numpy(arr).permute(0, 3, 1, 2)
    return t / 127.5 - 1.0  # mean = std = 0.5 after /255


def prompt_ids(
    tok: Tokenizer, n_image: int, bos_id: int, image_id: int, prompt: str = FREE_OCR_PROMPT
) -> list[int]:
    return [bos_id] + [image_id] * n_image + tok.encode(prompt).ids


def make_batch(
    pages: Sequence[Page],
    tok: Tokenizer,
    n_image: int,
    special: dict[str, int],
    max_target: int = 160,
) -> Batch:
    prefix = prompt_ids(tok, n_image, special["bos_token_id"], special["image_token_id"])
    encs = [tok.encode(p.text) for p in pages]
    tg = [e.ids[: max_target - 1] + [special["eos_token_id"]] for e in encs]
    lmax = max(len(t) for t in tg)
    targets = torch.full((len(pages), lmax), IGNORE, dtype=torch.long)
    for i, t in enumerate(tg):
        targets[i, : len(t)] = torch.tensor(t)
    side = pages[0].image.size[0]
    return Batch(
        cell_targets=cell_targets(pages, tok, side, grid=side // 64) if pages[0].spans else None,
        glyph_targets=glyph_targets(pages, side, grid=side // 16) if pages[0].spans else None,
        token_cells=(
            token_cells(pages, [e.offsets[: max_target - 1] for e in encs], side, grid=side // 64)
            if pages[0].spans
            else None
        ),
        pixels=pixels_from_pages(pages),
        prefix_ids=torch.tensor([prefix] * len(pages), dtype=torch.long),
        targets=targets,
        lengths=torch.tensor([len(t) for t in tg]),
        texts=[p.text for p in pages],
        levels=[p.level for p in pages],
    )


def corrupt(ids: torch.Tensor, rate: float, vocab: int, n_special: int, rng: random.Random) -> torch.Tensor:
    """Replace a fraction of AR input tokens with random ordinary tokens (targets untouched), so
    the decoder cannot rely on the text prefix alone and must keep looking at the image."""
    if rate <= 0:
        return ids
    g = torch.Generator().manual_seed(rng.getrandbits(31))
    mask = (torch.rand(ids.shape, generator=g) < rate) & (ids >= n_special)
    rnd = torch.randint(n_special, vocab, ids.shape, generator=g)
    return torch.where(mask, rnd, ids)


def glyph_row_y(y: float, font) -> float:  # noqa: ANN001 - PIL font
    """Vertical reference of a line drawn at ``y``: its glyphs' middle, not the ascender top."""
    return y + font.size * 0.6


def glyph_centres(x: float, text: str, font) -> list[float]:  # noqa: ANN001 - PIL font
    """Horizontal centre of each character of ``text`` drawn at ``x``."""
    out, left = [], 0.0
    for i in range(len(text)):
        right = font.getlength(text[: i + 1])
        out.append(x + 0.5 * (left + right))
        left = right
    return out


def cell_targets(pages: Sequence[Page], tok: Tokenizer, side: int, grid: int) -> torch.Tensor:
    """[B, grid*grid, V]: for each vision-token cell (64x64 px, row-major), the normalised bag of
    tokens whose glyphs are centred in it (all zeros for empty cells).

    This is the per-token reading head on the compressed tokens: it gives the encoder a direct,
    local signal of what text lies where, before the decoder has learnt to look at the image.
    """
    vocab = tok.get_vocab_size()
    cell = side / grid
    bi, ci, ti = [], [], []
    for b, p in enumerate(pages):
        for x, y, text, font in p.spans:
            enc = tok.encode(text)
            row = min(grid - 1, max(0, int(glyph_row_y(y, font) // cell)))
            ends = sorted({o for se in enc.offsets for o in se})
            xs = {o: font.getlength(text[:o]) for o in ends}
            for tid, (s0, e0) in zip(enc.ids, enc.offsets, strict=True):
                col = min(grid - 1, max(0, int((x + 0.5 * (xs[s0] + xs[e0])) // cell)))
                bi.append(b)
                ci.append(row * grid + col)
                ti.append(tid)
    out = torch.zeros(len(pages), grid * grid, vocab)
    if bi:
        idx = (torch.tensor(bi), torch.tensor(ci), torch.tensor(ti))
        out.index_put_(idx, torch.ones(len(bi)), accumulate=True)
    return out / out.sum(-1, keepdim=True).clamp_min(1.0)


# Glyph classes for the patch-level reading loss: 0 = no glyph centred here, 1.. = printable ASCII.
GLYPH_FIRST, GLYPH_LAST = 33, 126
GLYPH_CLASSES = 1 + GLYPH_LAST - GLYPH_FIRST + 1


def glyph_targets(pages: Sequence[Page], side: int, grid: int) -> torch.Tensor:
    """[B, grid*grid, GLYPH_CLASSES]: for each SAM patch (16x16 px, row-major), the normalised bag of
    characters whose glyph centres fall in it; class 0 where none does.

    The densest, most local reading signal there is: the patch encoder must tell letters apart
    from the first step, so the vision path cannot decay into constant tokens while the decoder
    is still a language model.
    """
    patch = side / grid
    out = torch.zeros(len(pages), grid * grid, GLYPH_CLASSES)
    for b, p in enumerate(pages):
        for x, y, text, font in p.spans:
            row = int(glyph_row_y(y, font) // patch)
            if not 0 <= row < grid:
                continue
            for ch, cx in zip(text, glyph_centres(x, text, font), strict=True):
                c = ord(ch)
                if GLYPH_FIRST <= c <= GLYPH_LAST:
                    col = int(cx // patch)
                    if 0 <= col < grid:
                        out[b, row * grid + col, 1 + c - GLYPH_FIRST] += 1.0
    empty = out.sum(-1) == 0
    out[..., 0] = empty.float()
    return out / out.sum(-1, keepdim=True)


def char_cells(page: Page, side: int, grid: int) -> list[int]:
    """Per character of ``page.text``: the vision-token cell (row-major) its glyph centre lies in,
    or -1 (newlines, spaces, text not found among the drawn spans)."""
    text = page.text
    out = [-1] * len(text)
    cell = side / grid
    cursor = 0
    for x, y, s, font in page.spans:
        at = text.find(s, cursor)
        if at < 0:
            at = text.find(s)  # table cells may be drawn out of text order
            if at < 0:
                continue
        else:
            cursor = at + len(s)
        row = int(glyph_row_y(y, font) // cell)
        if not 0 <= row < grid:
            continue
        for i, (ch, cx) in enumerate(zip(s, glyph_centres(x, s, font), strict=True)):
            col = int(cx // cell)
            if not ch.isspace() and 0 <= col < grid:
                out[at + i] = row * grid + col
    return out


def token_cells(
    pages: Sequence[Page], offsets: Sequence[Sequence[tuple[int, int]]], side: int, grid: int
) -> torch.Tensor:
    """[B, L]: for target token k (character ``offsets`` into the page text, without the EOS),
    the vision-token cell that shows it (the cell of its middle drawn character), IGNORE for tokens
    without glyphs (newlines, EOS, padding). L counts the EOS, as the targets do.

    The decoder's alignment target: where in the image the next token is to be read.
    """
    lmax = 1 + max(len(o) for o in offsets)
    out = torch.full((len(pages), lmax), IGNORE, dtype=torch.long)
    for b, p in enumerate(pages):
        cells = char_cells(p, side, grid)
        for k, (s0, e0) in enumerate(offsets[b]):
            inked = [c for c in cells[s0:e0] if c >= 0]
            if inked:
                out[b, k] = inked[len(inked) // 2]
    return out
