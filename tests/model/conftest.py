"""Shared fixtures for the model tests: one CPU thread, fresh random seeds each run."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def seed() -> int:
    """A fresh seed per test run (logged by pytest on failure through the fixture value)."""
    s = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(s)
    return s


@pytest.fixture
def tiny_model(seed):
    from ocrstream.model.config import tiny_test_config
    from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM

    model = DeepseekOCRForCausalLM(tiny_test_config()).eval()
    # Larger-than-init weights so logits are far from uniform (ties would make greedy comparisons flaky).
    with torch.no_grad():
        model.lm_head.weight.normal_(std=0.5)
        model.model.embed_tokens.weight.normal_(std=1.0)
    return model
