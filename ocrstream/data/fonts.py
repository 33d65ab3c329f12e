"""Fonts for synthetic pages, from Debian packages (scripts/install_fonts.sh).

Training uses several sans, serif and mono faces; one face (Noto Serif) is never used in training
and makes the unseen-font test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype"))


@dataclass(frozen=True)
class FontFace:
    name: str
    path: Path
    bold: bool = False


# name -> (relative path under a FONT_DIRS entry, bold)
_TRAIN = {
    "DejaVuSans": ("dejavu/DejaVuSans.ttf", False),
    "DejaVuSans-Bold": ("dejavu/DejaVuSans-Bold.ttf", True),
    "DejaVuSansCondensed": ("dejavu/DejaVuSansCondensed.ttf", False),
    "DejaVuSansMono": ("dejavu/DejaVuSansMono.ttf", False),
    "DejaVuSerif": ("dejavu/DejaVuSerif.ttf", False),
    "LiberationSans": ("liberation/LiberationSans-Regular.ttf", False),
    "LiberationSans-Bold": ("liberation/LiberationSans-Bold.ttf", True),
    "LiberationSerif": ("liberation/LiberationSerif-Regular.ttf", False),
    "LiberationSerif-Bold": ("liberation/LiberationSerif-Bold.ttf", True),
    "LiberationMono": ("liberation/LiberationMono-Regular.ttf", False),
    "NotoSans": ("noto/NotoSans-Regular.ttf", False),
    "NotoSans-Bold": ("noto/NotoSans-Bold.ttf", True),
}
_HELDOUT = {"NotoSerif": ("noto/NotoSerif-Regular.ttf", False)}
HELDOUT_FONT = "NotoSerif"


def _resolve(rel: str) -> Path | None:
    for d in FONT_DIRS:
        p = d / rel
        if p.exists():
            return p
    return None


def _faces(table: dict[str, tuple[str, bool]]) -> list[FontFace]:
    out = []
    for name, (rel, bold) in table.items():
        p = _resolve(rel)
        if p is not None:
            out.append(FontFace(name, p, bold))
    return out


@lru_cache(maxsize=1)
def train_fonts() -> tuple[FontFace, ...]:
    faces = _faces(_TRAIN)
    if not faces:
        raise FileNotFoundError(
            f"no training fonts found under {[str(d) for d in FONT_DIRS]}; run scripts/install_fonts.sh"
        )
    return tuple(faces)


@lru_cache(maxsize=1)
def heldout_fonts() -> tuple[FontFace, ...]:
    faces = _faces(_HELDOUT)
    if not faces:
        raise FileNotFoundError(f"held-out font {HELDOUT_FONT} missing; run scripts/install_fonts.sh")
    return tuple(faces)


def font_by_name(name: str) -> FontFace:
    for f in (*train_fonts(), *heldout_fonts()):
        if f.name == name:
            return f
    raise KeyError(f"unknown font {name!r}")


@lru_cache(maxsize=512)
def load_font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size=size)
