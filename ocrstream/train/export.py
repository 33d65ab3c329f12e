"""Ship a training checkpoint as the embedded model (``ocrstream/assets/model``).

Writes through the model package's ``save_snapshot`` (config.json + safetensors in the official
layout, fp16 storage to stay small) and copies the project tokenizer, so ``OcrModel.load()`` with
no arguments loads it. Only the model is shipped; the training-only reading query is dropped.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.weights import save_snapshot
from ocrstream.train.loop import build_trainee
from ocrstream.train.recipe import TILE
from ocrstream.train.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "model"
MAX_WEIGHTS_BYTES = 40 * 1024 * 1024


def load_checkpoint_model(ckpt: Path, tokenizer: Path) -> tuple[DeepseekOCRForCausalLM, dict]:
    tok = load_tokenizer(tokenizer)
    tr = build_trainee(tok)
    data = torch.load(ckpt, map_location="cpu", weights_only=False)
    tr.load_state_dict(data["trainee"])
    tr.model.eval()
    return tr.model, data


def export(ckpt: Path, tokenizer: Path, out: Path = ASSET_DIR, dtype: torch.dtype = torch.float16) -> dict:
    model, data = load_checkpoint_model(ckpt, tokenizer)
    model.config.default_mode = str(TILE)  # one view at the training size, e.g. "256"
    out.mkdir(parents=True, exist_ok=True)
    paths = save_snapshot(model, out, dtype=dtype)
    size = sum(p.stat().st_size for p in paths)
    if size > MAX_WEIGHTS_BYTES:
        raise ValueError(f"shipped weights are {size} bytes, over the {MAX_WEIGHTS_BYTES} limit")
    if tokenizer.resolve() != (out / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer, out / "tokenizer.json")
    log.info("exported %s -> %s (%d bytes)", ckpt, out, size)
    return {
        "state": data["state"],
        "train_config": data["train_config"],
        "weights_bytes": size,
        "n_params": sum(p.numel() for p in model.parameters()),
        "corpus": data.get("corpus"),
    }
