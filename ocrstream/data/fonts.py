"""Fonts for synthetic text, from Debian packages (scripts/install_fonts.sh installs them).

Training draws from many faces: sans, serif, mono, condensed, bold and italic, including the
metric clones of Times/Helvetica/Courier/Palatino (URW, TeX Gyre) and Computer/Latin Modern that
born-digital PDFs use most. One face, Noto Serif, is never used in training (no Noto Serif style
is) and makes the unseen-font test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

FONT_DIRS = (
    Path("/usr/share/fonts/truetype"),
    Path("/usr/share/fonts/opentype"),
    Path("/usr/share/fonts"),
    Path("/usr/share/texmf/fonts/opentype/public"),
)
# The Debian packages behind the table below (scripts/install_fonts.sh reads this line).
PACKAGES = [
    "fonts-dejavu-core",
    "fonts-dejavu-extra",
    "fonts-liberation",
    "fonts-noto-core",
    "fonts-freefont-ttf",
    "fonts-urw-base35",
    "fonts-texgyre",
    "fonts-lmodern",
    "fonts-cmu",
    "fonts-crosextra-carlito",
    "fonts-crosextra-caladea",
    "fonts-linuxlibertine",
    "fonts-open-sans",
    "fonts-roboto-unhinted",
    "fonts-lato",
    "fonts-go",
    "fonts-ebgaramond",
]


@dataclass(frozen=True)
class FontFace:
    name: str
    path: Path
    bold: bool = False


# name -> (path under a FONT_DIRS entry, bold)
_TRAIN = {
    "DejaVuSans": ("dejavu/DejaVuSans.ttf", False),
    "DejaVuSans-Bold": ("dejavu/DejaVuSans-Bold.ttf", True),
    "DejaVuSans-Oblique": ("dejavu/DejaVuSans-Oblique.ttf", False),
    "DejaVuSansCondensed": ("dejavu/DejaVuSansCondensed.ttf", False),
    "DejaVuSansMono": ("dejavu/DejaVuSansMono.ttf", False),
    "DejaVuSansMono-Bold": ("dejavu/DejaVuSansMono-Bold.ttf", True),
    "DejaVuSerif": ("dejavu/DejaVuSerif.ttf", False),
    "DejaVuSerif-Bold": ("dejavu/DejaVuSerif-Bold.ttf", True),
    "DejaVuSerif-Italic": ("dejavu/DejaVuSerif-Italic.ttf", False),
    "DejaVuSerifCondensed": ("dejavu/DejaVuSerifCondensed.ttf", False),
    "LiberationSans": ("liberation/LiberationSans-Regular.ttf", False),
    "LiberationSans-Bold": ("liberation/LiberationSans-Bold.ttf", True),
    "LiberationSans-Italic": ("liberation/LiberationSans-Italic.ttf", False),
    "LiberationSerif": ("liberation/LiberationSerif-Regular.ttf", False),
    "LiberationSerif-Bold": ("liberation/LiberationSerif-Bold.ttf", True),
    "LiberationSerif-Italic": ("liberation/LiberationSerif-Italic.ttf", False),
    "LiberationMono": ("liberation/LiberationMono-Regular.ttf", False),
    "LiberationMono-Bold": ("liberation/LiberationMono-Bold.ttf", True),
    "NotoSans": ("noto/NotoSans-Regular.ttf", False),
    "NotoSans-Bold": ("noto/NotoSans-Bold.ttf", True),
    "NotoSans-Italic": ("noto/NotoSans-Italic.ttf", False),
    "FreeSans": ("freefont/FreeSans.ttf", False),
    "FreeSerif": ("freefont/FreeSerif.ttf", False),
    "FreeSerif-Italic": ("freefont/FreeSerifItalic.ttf", False),
    "FreeMono": ("freefont/FreeMono.ttf", False),
    "NimbusRoman": ("urw-base35/NimbusRoman-Regular.otf", False),
    "NimbusRoman-Bold": ("urw-base35/NimbusRoman-Bold.otf", True),
    "NimbusRoman-Italic": ("urw-base35/NimbusRoman-Italic.otf", False),
    "NimbusSans": ("urw-base35/NimbusSans-Regular.otf", False),
    "NimbusSans-Bold": ("urw-base35/NimbusSans-Bold.otf", True),
    "NimbusSansNarrow": ("urw-base35/NimbusSansNarrow-Regular.otf", False),
    "NimbusMonoPS": ("urw-base35/NimbusMonoPS-Regular.otf", False),
    "NimbusMonoPS-Bold": ("urw-base35/NimbusMonoPS-Bold.otf", True),
    "P052": ("urw-base35/P052-Roman.otf", False),
    "C059": ("urw-base35/C059-Roman.otf", False),
    "URWBookman": ("urw-base35/URWBookman-Light.otf", False),
    "URWGothic": ("urw-base35/URWGothic-Book.otf", False),
    "TeXGyreTermes": ("tex-gyre/texgyretermes-regular.otf", False),
    "TeXGyreHeros": ("tex-gyre/texgyreheros-regular.otf", False),
    "TeXGyreHerosCondensed": ("tex-gyre/texgyreheroscn-regular.otf", False),
    "TeXGyrePagella": ("tex-gyre/texgyrepagella-regular.otf", False),
    "TeXGyreSchola": ("tex-gyre/texgyreschola-regular.otf", False),
    "TeXGyreBonum": ("tex-gyre/texgyrebonum-regular.otf", False),
    "TeXGyreCursor": ("tex-gyre/texgyrecursor-regular.otf", False),
    "LMRoman10": ("lm/lmroman10-regular.otf", False),
    "LMRoman10-Bold": ("lm/lmroman10-bold.otf", True),
    "LMRoman10-Italic": ("lm/lmroman10-italic.otf", False),
    "LMSans10": ("lm/lmsans10-regular.otf", False),
    "LMMono10": ("lm/lmmono10-regular.otf", False),
    "CMUSerif": ("cmu/cmunrm.ttf", False),
    "CMUSerif-Bold": ("cmu/cmunbx.ttf", True),
    "CMUSans": ("cmu/cmunss.ttf", False),
    "CMUTypewriter": ("cmu/cmuntt.ttf", False),
    "Carlito": ("crosextra/Carlito-Regular.ttf", False),
    "Carlito-Bold": ("crosextra/Carlito-Bold.ttf", True),
    "Caladea": ("crosextra/Caladea-Regular.ttf", False),
    "LinuxLibertine": ("linux-libertine/LinLibertine_R.otf", False),
    "LinuxLibertine-Italic": ("linux-libertine/LinLibertine_RI.otf", False),
    "LinuxBiolinum": ("linux-libertine/LinBiolinum_R.otf", False),
    "OpenSans": ("open-sans/OpenSans-Regular.ttf", False),
    "OpenSans-Bold": ("open-sans/OpenSans-Bold.ttf", True),
    "OpenSansCondensed": ("open-sans/OpenSans-CondLight.ttf", False),
    "Roboto": ("roboto/unhinted/RobotoTTF/Roboto-Regular.ttf", False),
    "Roboto-Bold": ("roboto/unhinted/RobotoTTF/Roboto-Bold.ttf", True),
    "Lato": ("lato/Lato-Regular.ttf", False),
    "Lato-Italic": ("lato/Lato-Italic.ttf", False),
    "GoRegular": ("fonts-go/Go-Regular.ttf", False),
    "GoMono": ("fonts-go/Go-Mono.ttf", False),
    "EBGaramond": ("ebgaramond/EBGaramond12-Regular.otf", False),
}
_HELDOUT = {"NotoSerif": ("noto/NotoSerif-Regular.ttf", False)}
HELDOUT_FONT = "NotoSerif"
# Every face of the held-out family stays out of training, not only the held-out one.
HELDOUT_FAMILY = "NotoSerif"
MIN_TRAIN_FACES = 40  # fewer found means the font packages are missing (install_fonts.sh)


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


def _missing_hint() -> str:
    return f"run scripts/install_fonts.sh (Debian packages: {' '.join(PACKAGES)})"


@lru_cache(maxsize=1)
def train_fonts() -> tuple[FontFace, ...]:
    faces = _faces(_TRAIN)
    if len(faces) < MIN_TRAIN_FACES:
        missing = sorted(set(_TRAIN) - {f.name for f in faces})
        raise FileNotFoundError(
            f"only {len(faces)} of {len(_TRAIN)} training fonts found (missing {missing[:6]}...); "
            + _missing_hint()
        )
    return tuple(faces)


@lru_cache(maxsize=1)
def heldout_fonts() -> tuple[FontFace, ...]:
    faces = _faces(_HELDOUT)
    if not faces:
        raise FileNotFoundError(f"held-out font {HELDOUT_FONT} missing; " + _missing_hint())
    return tuple(faces)


def font_by_name(name: str) -> FontFace:
    for f in (*_faces(_TRAIN), *_faces(_HELDOUT)):
        if f.name == name:
            return f
    raise KeyError(f"unknown or missing font {name!r}; " + _missing_hint())


@lru_cache(maxsize=4096)  # every face at every training size (69 x 34) stays loaded
def load_font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size=size)


@lru_cache(maxsize=256)
def coverage(path: Path) -> frozenset[str]:
    """Characters the face has a glyph for (its cmap): others would render as a .notdef box."""
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True, fontNumber=0) as f:
        return frozenset(chr(cp) for cp in f.getBestCmap())
