"""The resolution ladder a model offers, most vision tokens first.

The official model reads the paper's native modes (Large 1280, Base 1024, Small 640, Tiny 512).
A small model trained at another view side (the embedded one reads 256-px views) gets the same
ladder scaled by ``sam.img_size / 1024``, rounded to multiples of 16 and named by its size spec
(``"320"``, ``"256"`` ...), so its vision-token cache keys never collide with the official names.
A config may also declare its own rows with an extra ``compression_modes`` entry (list of size
specs), which wins.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from ocrstream.model.lines import count_tokens
from ocrstream.model.modes import MODES, Mode, get_mode, num_encoder_tokens, num_vision_tokens

# The paper's non-tiled modes, most tokens first: the rungs progressive forgetting walks down.
OFFICIAL_LADDER = ("large", "base", "small", "tiny")
OFFICIAL_VIEW = 1024  # Base view side of the official model; the ladder scales from it


def _round16(x: float) -> int:
    return max(16, int(round(x / 16.0)) * 16)


def model_ladder(config) -> tuple[Mode, ...]:  # noqa: ANN001 - DeepseekOCRConfig
    """Non-tiled modes for ``config``, most tokens first."""
    declared = getattr(config, "compression_modes", None)
    if declared:
        return order_modes(get_mode(m) for m in declared)
    view = int(config.sam.img_size)
    if view == OFFICIAL_VIEW:
        return tuple(MODES[m] for m in OFFICIAL_LADDER)
    scale = view / OFFICIAL_VIEW
    sides = []
    for name in OFFICIAL_LADDER:
        side = _round16(MODES[name].base_size * scale)
        if side not in sides:
            sides.append(side)
    return tuple(get_mode(str(s)) for s in sides)


def order_modes(modes: Sequence[Mode] | object) -> tuple[Mode, ...]:
    """Modes sorted by vision tokens for a square base-size page, most first (lines modes: widest
    rung first); duplicates dropped."""
    out: dict[str, Mode] = {}
    for m in modes:  # type: ignore[union-attr]
        out.setdefault(m.name, m)

    def cost(m: Mode) -> float:
        return m.squeeze * 1e9 if m.lines else num_vision_tokens(m, m.base_size, m.base_size)

    return tuple(sorted(out.values(), key=lambda m: -cost(m)))


def page_tokens(mode: Mode | str, size: tuple[int, int], image: Image.Image | None = None) -> tuple[int, int]:
    """(decoder placeholders, encoder tokens) one page of ``size`` costs in ``mode``.

    Placeholders (incl. newline and separator slots) are what a context budget pays; encoder
    tokens are the paper's "vision tokens" and the denominator of the compression ratio. A lines
    mode's cost depends on the page's lines, not its size: it needs the page ``image``.
    """
    m = get_mode(mode)
    if m.lines:
        if image is None:
            raise ValueError(f"mode {m.name!r} costs what the page's text lines cost: pass the page image")
        return count_tokens(image, m.squeeze)
    w, h = size
    return num_vision_tokens(m, w, h), num_encoder_tokens(m, w, h)
