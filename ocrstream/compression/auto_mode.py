"""Automatic resolution mode per page: the cheapest mode expected to meet a precision target.

A page needs only as many vision tokens as its text density requires. ``choose_mode`` estimates
the page's text tokens (text layer when the PDF has one, else the pixel estimate in ``density``),
computes each candidate's compression ratio (text tokens / encoder tokens at this page size),
looks up the expected precision on the model's measured curve, and returns the cheapest candidate
that reaches the target, with the reason. With ``reference`` and ``margin`` the goal is instead
"no worse than ``reference`` minus ``margin``" (e.g. within 2 points of fixed Base), whatever the
target.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image

from ocrstream.compression.curve import CompressionCurve
from ocrstream.compression.density import estimate
from ocrstream.compression.ladder import page_tokens
from ocrstream.model.modes import Mode, get_mode

log = logging.getLogger(__name__)

DEFAULT_TARGET = 0.95


@dataclass(frozen=True)
class ModeChoice:
    mode: str
    reason: str
    expected_precision: float
    est_text_tokens: float
    vision_tokens: int = 0  # decoder placeholders this page costs in ``mode``
    compression: float = 0.0  # est text tokens / encoder tokens
    density_source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _resolve(curve: CompressionCurve, m: str | Mode) -> Mode:
    if isinstance(m, Mode):
        return m
    name = get_mode(m).name
    return curve.modes[name].mode if name in curve.modes else get_mode(m)


def choose_mode(
    page_image: Image.Image | None,
    text_layer_chars: int | None = None,
    curve: CompressionCurve | None = None,
    target: float = DEFAULT_TARGET,
    candidates: Sequence[str | Mode] | None = None,
    *,
    reference: str | Mode | None = None,
    margin: float = 0.0,
    page_size: tuple[int, int] | None = None,
) -> ModeChoice:
    """Pick a mode for one page (see module doc). ``page_size`` defaults to the image's size."""
    if curve is None:
        raise ValueError("choose_mode needs a compression curve (compression.curve.curve_for(model_dir))")
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target precision must be in [0, 1], got {target}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    size = page_size or (page_image.size if page_image is not None else None)
    if size is None:
        raise ValueError("need a page image or page_size")
    cands = [_resolve(curve, c) for c in (candidates or curve.mode_objects())]
    if not cands:
        raise ValueError("no candidate modes")
    est = estimate(page_image, text_layer_chars)
    text_tokens = est.text_tokens(curve.chars_per_token)
    if est.source == "image":  # calibrated on the curve's pages (a text layer is exact)
        text_tokens *= curve.density_scale

    def score(m: Mode) -> tuple[int, float, float]:
        placeholders, enc = page_tokens(m, size, page_image)
        if enc <= 0:  # no text lines: nothing to read, every rung is as good
            return placeholders, 0.0, 1.0
        ratio = text_tokens / enc
        return placeholders, ratio, curve.expected_precision(m, ratio)

    goal = target
    ref_note = ""
    if reference is not None:
        ref_p = score(_resolve(curve, reference))[2]
        goal = ref_p - margin  # the promise is relative to Base: a fixed target would spend more
        # of it on pages Base reads well (target 0.95 let auto give up 0.07 against Base's 0.997)
        ref_note = f", {getattr(reference, 'name', reference)} expects {ref_p:.3f} - margin {margin:g}"
    scored = sorted(((score(m), m) for m in cands), key=lambda x: (x[0][0], -x[0][2]))
    src = f"~{text_tokens:.0f} text tokens ({est.source})"
    for (cost, ratio, exp), m in scored:
        if exp >= goal:
            reason = f"{src}; cheapest mode with expected precision {exp:.3f} >= target {goal:.3f}{ref_note}"
            return ModeChoice(m.name, reason, exp, text_tokens, cost, ratio, est.source)
    (cost, ratio, exp), m = max(scored, key=lambda x: (x[0][2], -x[0][0]))
    reason = f"{src}; no mode reaches target {goal:.3f}{ref_note}; best expected {exp:.3f}"
    return ModeChoice(m.name, reason, exp, text_tokens, cost, ratio, est.source)


# ---- hooks for the `ocr` CLI and the pipeline's encoder ------------------------------------------
MARGIN_TO_BASE = 0.02  # auto may give up at most this much precision against Base
# ... and plans to give up no more than the margin less this: a curve point measured on ~24 pages
# is itself known to about +-0.01, so planning right at the margin lands under it half the time
# (planned at 0.02, the shipped model's bench read 0.976 against Base's 0.997).
SAFETY = 0.01


@dataclass(frozen=True)
class AutoPolicy:
    """What ``--mode auto`` optimises for one model: its curve, candidates and target."""

    curve: CompressionCurve
    target: float = DEFAULT_TARGET
    reference: str | None = None  # the model's Base rung; None = absolute target only
    margin: float = MARGIN_TO_BASE  # the promise against ``reference``
    safety: float = SAFETY  # kept back from the margin when choosing (see SAFETY)

    def choose(
        self,
        image: Image.Image | None,
        text_layer_chars: int | None = None,
        page_size: tuple[int, int] | None = None,
    ) -> ModeChoice:
        return choose_mode(
            image,
            text_layer_chars,
            self.curve,
            self.target,
            reference=self.reference,
            margin=max(0.0, self.margin - self.safety),
            page_size=page_size,
        )


def policy_for(checkpoint_dir: str | None = None) -> AutoPolicy:
    """The policy for a model folder ("" / None = the shipped model), cached per folder."""
    return _policy_for(str(checkpoint_dir or ""))


@lru_cache(maxsize=8)
def _policy_for(checkpoint_dir: str) -> AutoPolicy:
    from ocrstream.compression.curve import curve_for
    from ocrstream.model.config import DeepseekOCRConfig
    from ocrstream.model.runtime import SHIPPED_MODEL_DIR

    folder = Path(checkpoint_dir) if checkpoint_dir else SHIPPED_MODEL_DIR
    cfg_path = folder / "config.json"
    cfg = DeepseekOCRConfig.from_json_file(cfg_path) if cfg_path.exists() else None
    curve = curve_for(folder, cfg.name if cfg is not None else None)
    ref = None
    # the model's Base rung: the official name, a small square model's view size, or a line
    # reader's default (full-width) rung
    for name in ("base", *((str(cfg.sam.img_size), cfg.default_mode) if cfg is not None else ())):
        if name in curve.modes:
            ref = name
            break
    return AutoPolicy(curve, reference=ref)
