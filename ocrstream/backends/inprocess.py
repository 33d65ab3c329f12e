"""In-process backends: thin adapters over ``ocrstream.model.runtime.OcrModel``.

One ``OcrModel`` can back both the encoder and the decoder (embedded mode loads it once).
``encode_calls`` counts pages that really ran through the vision encoder (the re-decode test and
the cache-hit metric read it).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from PIL import Image

from ocrstream.backends.base import Decoded, Encoded
from ocrstream.errors import BackendUnavailable
from ocrstream.guard import sampling_seed

log = logging.getLogger(__name__)

DEFAULT_MODE = "default"  # mode name meaning "the model's configured default_mode"


def load_model(
    checkpoint_dir: str = "", device: str = "cpu", dtype: str = "", max_crops: int | None = None
) -> Any:
    """The shipped model (empty ``checkpoint_dir``) or a checkpoint folder, on ``device``
    (auto | cuda | cuda:<n> | cpu) in ``dtype`` (empty: bf16 on a GPU, fp32 on the CPU;
    ``ocrstream.serving.device``), tiling gundam modes into at most ``max_crops`` (None: the
    config's). A bad device or dtype name raises ValueError."""
    from ocrstream.model.runtime import OcrModel
    from ocrstream.serving.device import resolve_device, resolve_dtype

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    try:
        model = OcrModel.load(checkpoint_dir or None, device=str(dev), dtype=dt, max_crops=max_crops)
    except (FileNotFoundError, OSError) as exc:
        raise BackendUnavailable(
            f"cannot load the OCR model from {checkpoint_dir or 'the shipped assets'}: {exc}"
        ) from exc
    log.info("OCR model on %s in %s", dev, dt)
    return model


class InProcessEncoder:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.encode_calls = 0
        self._lock = threading.Lock()  # torch modules are not re-entrant across service threads

    @property
    def weights_id(self) -> str:
        return str(self.model.weights_id)

    def encode(self, images: list[Image.Image], mode: str) -> list[Encoded]:
        model_mode = None if mode == DEFAULT_MODE else mode  # the checkpoint's own default_mode
        with self._lock:
            out = []
            if hasattr(self.model, "encode_batch"):
                vts = self.model.encode_batch(images, model_mode)
            else:
                vts = [self.model.encode(img, model_mode) for img in images]
            for vt in vts:
                out.append(Encoded(vt.to_bytes(), int(vt.embeds.shape[0])))
            self.encode_calls += len(images)
            return out


class InProcessDecoder:
    def __init__(self, model: Any) -> None:
        self.model = model
        self._lock = threading.Lock()
        from ocrstream.model.runtime import VisionTokens

        self._vt = VisionTokens

    def decode(
        self,
        tokens: list[bytes],
        prompt: str,
        max_new_tokens: int,
        temperature: float = 0.0,
        ngram: tuple[int, int] | None = None,
    ) -> list[Decoded]:
        vts = [self._vt.from_bytes(b) for b in tokens]
        with self._lock:
            res = self.model.decode(
                vts,
                prompt=prompt,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                ngram=ngram,
                seed=sampling_seed(tokens, prompt, temperature),
            )
        return [Decoded(r.text, list(r.token_ids), bool(r.stopped), int(r.n_tokens)) for r in res]
