"""Hooks for `ocrstream ocr --mode auto` and the pipeline's encoder, importable without torch.

The encoder handler module is imported by every service's wiring, including the torch-less ingest
and rasterizer roles, so this module imports the mode-choice machinery only when a page actually
asks for ``"auto"``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

AUTO = "auto"


def is_auto(mode: object) -> bool:
    return isinstance(mode, str) and mode.lower() == AUTO


def resolve_mode(
    mode: str,
    image: Image.Image,
    checkpoint_dir: str | None = None,
    text_layer_chars: int | None = None,
    page: str = "",
) -> str:
    """The pipeline hook: ``"auto"`` -> this page's mode (choice and reason logged); any other mode
    unchanged. ``checkpoint_dir`` None = the service's OCRSTREAM_CHECKPOINT_DIR (empty: shipped).
    A model without a curve fails the page permanently with the reason (retrying cannot help)."""
    if not is_auto(mode):
        return mode
    from ocrstream.compression.auto_mode import policy_for
    from ocrstream.errors import PermanentError

    if checkpoint_dir is None:
        from ocrstream.config import CommonConfig

        checkpoint_dir = CommonConfig.from_env().checkpoint_dir
    try:
        choice = policy_for(checkpoint_dir).choose(image, text_layer_chars)
    except (FileNotFoundError, ValueError) as exc:
        raise PermanentError(
            f"--mode auto unavailable for {page or 'page'}: {exc}", reason="bad_mode"
        ) from exc
    log.info("auto mode %s: %s (%s)", page or "page", choice.mode, choice.reason)
    return choice.mode


def encode_batch_auto(model, images: Sequence[Image.Image], mode: Any, checkpoint_dir=None) -> list:  # noqa: ANN001
    """``model.encode_batch`` that also takes ``"auto"``: one mode per page, order kept."""
    if not is_auto(mode):
        return model.encode_batch(images, mode)
    from ocrstream.compression.auto_mode import policy_for

    policy = policy_for(str(checkpoint_dir or ""))
    groups: dict[str, list[int]] = {}
    for i, img in enumerate(images):
        choice = policy.choose(img)
        log.info("auto mode page %d: %s (%s)", i + 1, choice.mode, choice.reason)
        groups.setdefault(choice.mode, []).append(i)
    out: list = [None] * len(images)
    for m, idx in groups.items():
        for i, vt in zip(idx, model.encode_batch([images[i] for i in idx], m), strict=True):
            out[i] = vt
    return out
