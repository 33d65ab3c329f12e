"""Ship a training checkpoint as the embedded model (``ocrstream/assets/model``).

Writes through the model package's ``save_snapshot`` (config.json + safetensors in the official
layout, fp16 storage to stay small) and copies the project tokenizer, so ``OcrModel.load()`` with
no arguments loads it. Only the model is shipped; the training-only reading query is dropped.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import torch

from ocrstream.data.fonts import HELDOUT_FONT, train_fonts
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
    # whole pages are re-laid into views at the training size ("reflow-256"): see model/reflow.py
    model.config.default_mode = f"reflow-{TILE}"
    out.mkdir(parents=True, exist_ok=True)
    paths = save_snapshot(model, out, dtype=dtype)
    size = sum(p.stat().st_size for p in paths)
    if size > MAX_WEIGHTS_BYTES:
        raise ValueError(f"shipped weights are {size} bytes, over the {MAX_WEIGHTS_BYTES} limit")
    if tokenizer.resolve() != (out / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer, out / "tokenizer.json")
    log.info("exported %s -> %s (%d bytes)", ckpt, out, size)
    st = data["state"]
    return {
        "checkpoint": str(ckpt),
        "step": st["step"],
        "pages_seen": st["pages"],
        "cpu_hours": st["cpu_seconds"] / 3600,
        "wall_hours": st["wall_seconds"] / 3600,
        "top_level": st["top_level"],
        "train_config": data["train_config"],
        "corpus_sha256_16": data.get("corpus"),
        "tokenizer_sha256": hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest(),
        "weights_bytes": size,
        "n_params": sum(p.numel() for p in model.parameters()),
        "fonts_train": [f.name for f in train_fonts()],
        "font_heldout": HELDOUT_FONT,
    }
