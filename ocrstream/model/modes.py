"""Resolution modes, vision-token counts and image preprocessing.

Follows the official ``DeepSeek-OCR-vllm/process/image_process.py`` (``DeepseekOCRProcessor``:
``tokenize_with_images``, ``get_num_image_tokens``, ``dynamic_preprocess``,
``find_closest_aspect_ratio``) and HF ``modeling_deepseekocr.py`` ``infer()``:

* global view: ``ImageOps.pad`` to base_size with grey (127,127,127); in non-crop modes with
  image_size <= 640 (Tiny/Small) the image is first stretched to image_size x image_size;
* crop modes tile only when a side exceeds 640; the grid (W_t columns, H_t rows) is chosen by
  aspect ratio among 2..max_crops tiles in the official candidate order and tie rule; tiles are the
  image stretched to (tile*W_t, tile*H_t) and cut row-major;
* pixels are normalised with mean = std = 0.5.

Modes are data (``Mode``) passed per request; ``MODES`` holds the official ones.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageOps

PAD_COLOR = (127, 127, 127)  # int(0.5 * 255) per channel, the official pad colour
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
DEFAULT_MAX_CROPS = 9  # HF infer(); the official vLLM config uses 6
DEFAULT_MIN_CROPS = 2


@dataclass(frozen=True)
class Mode:
    """One resolution mode: global view side, tile side, whether to tile."""

    name: str
    base_size: int
    image_size: int
    crop: bool
    no_tile_max: int = 640  # official code hard-codes 640 (not image_size) as the no-tiling bound
    # ocrstream extension ("reflow-<side>"): the page's text lines are re-laid into as many
    # side x side views as they fill, each read on its own (``ocrstream.model.reflow``)
    reflow: bool = False
    # ocrstream extension ("lines", "lines-<percent>"): each text line of the page is one strip
    # base_size px tall (``ocrstream.model.lines``), its width scaled by ``squeeze``: the
    # horizontal compression rung (lines-50 = half the vision tokens per character)
    lines: bool = False
    squeeze: float = 1.0

    def __post_init__(self) -> None:
        for side in (self.base_size, self.image_size):
            if side <= 0 or side % 16:
                raise ValueError(f"mode {self.name!r}: view side {side} must be a positive multiple of 16")


MODES: dict[str, Mode] = {
    "tiny": Mode("tiny", 512, 512, False),
    "small": Mode("small", 640, 640, False),
    "base": Mode("base", 1024, 1024, False),
    "large": Mode("large", 1280, 1280, False),
    "gundam": Mode("gundam", 1024, 640, True),
    # Paper-only (continued training); the released weights may not support it.
    "gundam-m": Mode("gundam-m", 1280, 1024, True),
}


def get_mode(mode: str | Mode) -> Mode:
    """A Mode, a name from MODES, or a size spec: "<side>" (one view, stretched when <= 640,
    padded otherwise), "<base>x<tile>" (global view + tiles, like Gundam) or "reflow-<side>"
    (text lines re-laid into side x side views) or "lines" / "lines-<percent>" (each text line one
    strip, its width scaled to percent: the embedded line reader's modes)."""
    if isinstance(mode, Mode):
        return mode
    key = mode.lower().replace("_", "-")
    if key in MODES:
        return MODES[key]
    lines = re.fullmatch(r"lines(?:-(\d+))?", key)
    if lines is not None:
        pct = int(lines.group(1) or 100)
        if not 10 <= pct <= 100:
            raise ValueError(f"mode {mode!r}: the lines rung is a width percentage in 10..100")
        return Mode(key if pct != 100 else "lines", 32, 32, False, lines=True, squeeze=pct / 100)
    reflow = re.fullmatch(r"reflow-(\d+)", key)
    if reflow is not None:
        side = int(reflow.group(1))
        return Mode(key, side, side, False, reflow=True)
    spec = re.fullmatch(r"(\d+)(?:x(\d+))?", key)
    if spec is None:
        raise ValueError(
            f"unknown mode {mode!r}; known: {sorted(MODES)} or a size spec like '512' or '1024x640'"
        )
    base = int(spec.group(1))
    tile = int(spec.group(2) or base)
    return Mode(key, base, tile, spec.group(2) is not None)


def grid_side(view: int) -> int:
    """Tokens per side after SAM (/16) and the two stride-2 convs (ceil /4)."""
    return math.ceil((view // 16) / 4)


@lru_cache(maxsize=32)
def candidate_grids(
    min_num: int = DEFAULT_MIN_CROPS, max_num: int = DEFAULT_MAX_CROPS
) -> tuple[tuple[int, int], ...]:
    """(columns, rows) candidates in the official order.

    The official code sorts a Python set by tile count; the set's iteration order (deterministic
    for small int tuples) decides ties, so the set is built the same way here.
    """
    cands = {
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    }
    return tuple(sorted(cands, key=lambda r: r[0] * r[1]))


def select_grid(
    width: int, height: int, tile: int, min_num: int = DEFAULT_MIN_CROPS, max_num: int = DEFAULT_MAX_CROPS
) -> tuple[int, int]:
    """Closest aspect-ratio tiling (W_t, H_t); on exact ties a later candidate wins only when the
    image covers more than half of its pixel area."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    aspect = width / height
    area = width * height
    best_diff = float("inf")
    best = (1, 1)
    for cols, rows in candidate_grids(min_num, max_num):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best_diff, best = diff, (cols, rows)
        elif diff == best_diff and area > 0.5 * tile * tile * cols * rows:
            best = (cols, rows)
    return best


def tile_grid(
    mode: str | Mode,
    width: int,
    height: int,
    max_crops: int = DEFAULT_MAX_CROPS,
    min_crops: int = DEFAULT_MIN_CROPS,
) -> tuple[int, int]:
    """(W_t, H_t) tiling for an image; (1, 1) means no local tiles."""
    m = get_mode(mode)
    if not m.crop or (width <= m.no_tile_max and height <= m.no_tile_max):
        return (1, 1)
    return select_grid(width, height, m.image_size, min_crops, max_crops)


def num_vision_tokens(
    mode: str | Mode,
    width: int,
    height: int,
    max_crops: int = DEFAULT_MAX_CROPS,
    min_crops: int = DEFAULT_MIN_CROPS,
) -> int:
    """Number of `<image>` placeholders (= embeddings incl. newlines and separator) for one image."""
    m = get_mode(mode)
    qb = grid_side(m.base_size)
    n = qb * (qb + 1) + 1  # global grid rows + a newline each, then the view separator
    cols, rows = tile_grid(m, width, height, max_crops, min_crops)
    if cols * rows > 1:
        q = grid_side(m.image_size)
        n += (q * rows) * (q * cols + 1)  # stitched local grid with a newline per big row
    return n


def num_encoder_tokens(
    mode: str | Mode,
    width: int,
    height: int,
    max_crops: int = DEFAULT_MAX_CROPS,
    min_crops: int = DEFAULT_MIN_CROPS,
) -> int:
    """The paper's "vision tokens": encoder outputs only (no newline/separator)."""
    m = get_mode(mode)
    cols, rows = tile_grid(m, width, height, max_crops, min_crops)
    n = grid_side(m.base_size) ** 2
    if cols * rows > 1:
        n += cols * rows * grid_side(m.image_size) ** 2
    return n


@dataclass
class ImageInput:
    """One preprocessed image: global view [3, B, B] and local tiles [W_t*H_t, 3, T, T] (or None)."""

    global_view: torch.Tensor
    tiles: torch.Tensor | None
    grid: tuple[int, int]  # (W_t columns, H_t rows); (1, 1) when there are no tiles
    mode: str
    image_size: tuple[int, int]  # original (width, height)
    meta: dict = field(default_factory=dict)

    def validate(self) -> None:
        g = self.global_view
        if g.dim() != 3 or g.shape[0] != 3 or g.shape[1] != g.shape[2]:
            raise ValueError(f"global_view must be [3, S, S], got {tuple(g.shape)}")
        cols, rows = self.grid
        if self.tiles is None:
            if cols * rows != 1:
                raise ValueError(f"grid {self.grid} needs {cols * rows} tiles, got none")
            return
        t = self.tiles
        if t.dim() != 4 or t.shape[0] != cols * rows or t.shape[1] != 3 or t.shape[2] != t.shape[3]:
            raise ValueError(
                f"tiles must be [{cols * rows}, 3, T, T] for grid {self.grid}, got {tuple(t.shape)}"
            )

    @property
    def num_placeholders(self) -> int:
        qb = grid_side(self.global_view.shape[-1])
        n = qb * (qb + 1) + 1
        if self.tiles is not None:
            cols, rows = self.grid
            q = grid_side(self.tiles.shape[-1])
            n += (q * rows) * (q * cols + 1)
        return n


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> normalised float32 [3, H, W] in [-1, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    t = torch.from_numpy(arr).permute(2, 0, 1)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return (t - mean) / std


def preprocess(
    image: Image.Image,
    mode: str | Mode = "base",
    max_crops: int = DEFAULT_MAX_CROPS,
    min_crops: int = DEFAULT_MIN_CROPS,
) -> ImageInput:
    """PIL image -> ImageInput per the official rules (call ImageOps.exif_transpose first if needed)."""
    m = get_mode(mode)
    img = image.convert("RGB")
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ValueError(f"empty image {w}x{h}")
    bicubic = Image.Resampling.BICUBIC
    if m.crop:
        cols, rows = tile_grid(m, w, h, max_crops, min_crops)
        tiles = None
        if cols * rows > 1:
            t = m.image_size
            big = img.resize((t * cols, t * rows), bicubic)  # stretched, no aspect preservation
            crops = [
                big.crop((c * t, r * t, (c + 1) * t, (r + 1) * t)) for r in range(rows) for c in range(cols)
            ]
            tiles = torch.stack([to_tensor(c) for c in crops])
        glob = ImageOps.pad(img, (m.base_size, m.base_size), method=bicubic, color=PAD_COLOR)
    else:
        cols, rows, tiles = 1, 1, None
        src = img
        if m.image_size <= 640:
            src = img.resize((m.image_size, m.image_size), bicubic)  # Tiny/Small stretch
        glob = ImageOps.pad(src, (m.base_size, m.base_size), method=bicubic, color=PAD_COLOR)
    out = ImageInput(to_tensor(glob), tiles, (cols, rows), m.name, (w, h))
    out.validate()
    return out


def load_image(path: str) -> Image.Image:
    """Open an image file the way the official scripts do (EXIF orientation applied, RGB)."""
    try:
        img = Image.open(path)
        img = ImageOps.exif_transpose(img)
        return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
