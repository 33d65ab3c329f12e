"""The encoder's hook for ``--mode auto`` (the pipeline's, so also ``ocrstream ocr``'s), importable
without torch.

The encode step (``ocrstream.backends.pages``) is imported by every service's wiring, including the
torch-less ingest and rasterizer roles, so this module imports the mode-choice machinery only when
a page actually asks for ``"auto"``.
"""

from __future__ import annotations

import logging

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
