"""Fixtures every test folder may use (imported by tests/conftest.py): a fresh random source, an
in-memory backbone, a tiny random-weight model and its saved snapshot."""

from __future__ import annotations

import os
import random

import pytest

from ocrstream.bus.memory import MemoryBus
from ocrstream.cache.memory import MemoryCache
from ocrstream.config import CommonConfig
from ocrstream.services.wiring import Backbone
from ocrstream.store.local import LocalStore
from ocrstream.telemetry import Telemetry, tracer_provider
from tests.tiny import tiny_ocr_model


@pytest.fixture
def rng() -> random.Random:
    return random.Random(os.urandom(8))


@pytest.fixture
def backbone(tmp_path) -> Backbone:
    common = CommonConfig.from_env({}, store="local", store_dir=str(tmp_path / "store"), cache="memory")
    return Backbone(
        common,
        MemoryBus(),
        LocalStore(tmp_path / "store"),
        MemoryCache(),
        Telemetry("test", tracer_provider("test")),
    )


@pytest.fixture(scope="session")
def tiny_model():
    return tiny_ocr_model(int.from_bytes(os.urandom(4), "little"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    """The session's tiny model saved as a snapshot folder (config.json, safetensors, tokenizer.json)."""
    from ocrstream.model.weights import save_snapshot

    folder = tmp_path_factory.mktemp("tiny-ckpt")
    save_snapshot(tiny_model.model, folder)
    tiny_model.tokenizer.tok.save(str(folder / "tokenizer.json"))
    return folder
