"""Vision-to-decoder projector.

Follows the official ``DeepSeek-OCR-vllm/deepencoder/build_linear.py`` (``MlpProjector``) for the
only type the checkpoint uses, ``projector_type: "linear"``: one biased ``nn.Linear`` stored as
``model.projector.layers``.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ProjectorConfig


class MlpProjector(nn.Module):
    def __init__(self, cfg: ProjectorConfig) -> None:
        super().__init__()
        if cfg.projector_type != "linear":
            raise ValueError(f"projector_type {cfg.projector_type!r} unsupported (only 'linear')")
        self.cfg = cfg
        self.layers = nn.Linear(cfg.input_dim, cfg.n_embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # [B, N, input_dim] -> [B, N, n_embed]
