"""Ship a training checkpoint as the embedded model (``ocrstream/assets/model``).

Writes through the model package's ``save_snapshot`` (config.json + safetensors in the official
layout, fp16 storage to stay small) and the run's tokenizer, so ``OcrModel.load()`` with no
arguments loads it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from ocrstream.data.fonts import HELDOUT_FONT, train_fonts
from ocrstream.model.config import DeepseekOCRConfig
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.weights import save_snapshot

log = logging.getLogger(__name__)

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "model"
MAX_WEIGHTS_BYTES = 40 * 1024 * 1024


def load_checkpoint_model(ckpt: Path) -> tuple[DeepseekOCRForCausalLM, dict]:
    """A training checkpoint (``ckpt.pt`` / ``best.pt`` of a run) -> (model in eval mode, its data)."""
    data = torch.load(ckpt, map_location="cpu", weights_only=False)
    model = DeepseekOCRForCausalLM(DeepseekOCRConfig.from_hf_dict(data["model_config"]), init=False)
    model.load_state_dict(data["model"])
    return model.eval(), data


def export(ckpt: Path, out: Path = ASSET_DIR, dtype: torch.dtype = torch.float16) -> dict:
    """Write the snapshot and return its provenance (for eval.json and the model card)."""
    model, data = load_checkpoint_model(ckpt)
    if model.config.sam.strips:  # runtime settings (not weights) come from the recipe as it is now
        from ocrstream.train.line_recipe import apply_runtime_settings

        apply_runtime_settings(model.config)
    tokenizer = ckpt.parent / "tokenizer.json"
    if not tokenizer.exists():
        raise FileNotFoundError(f"{tokenizer} missing: a run keeps its tokenizer beside its checkpoints")
    out.mkdir(parents=True, exist_ok=True)
    paths = save_snapshot(model, out, dtype=dtype, tokenizer=tokenizer)
    # fp16 on disk keeps the file small; the CPU runs fp32 (fp16 matmuls are slow or missing there)
    model.config.replace(torch_dtype="float32").to_json_file(out / "config.json")
    size = sum(p.stat().st_size for p in paths if p.suffix == ".safetensors")
    if size > MAX_WEIGHTS_BYTES:
        raise ValueError(f"shipped weights are {size} bytes, over the {MAX_WEIGHTS_BYTES} limit")
    log.info("exported %s -> %s (%d bytes)", ckpt, out, size)
    st = data["state"]
    return {
        "checkpoint": str(ckpt),
        "step": st["step"],
        "lines_seen": st["lines"],
        "cpu_hours": st["cpu_seconds"] / 3600,
        "wall_hours": st["wall_seconds"] / 3600,
        "train_config": data["train_config"],
        "corpus_sha256_16": data.get("corpus"),
        "tokenizer_sha256": hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest(),
        "weights_bytes": size,
        "n_params": sum(p.numel() for p in model.parameters()),
        "fonts_train": [f.name for f in train_fonts()],
        "font_heldout": HELDOUT_FONT,
        "history": st.get("history", [])[-12:],
    }
