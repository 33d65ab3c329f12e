"""Fixtures for pipeline tests: documents made on the fly (reportlab, PIL), in-memory backbone."""

from __future__ import annotations

import io
import os
import random
import string

import pypdfium2 as pdfium
import pytest
from ocrstream.services.wiring import Backbone
from PIL import Image
from reportlab.lib.pagesizes import A6
from reportlab.pdfgen import canvas

from ocrstream.bus.memory import MemoryBus
from ocrstream.cache.memory import MemoryCache
from ocrstream.config import CommonConfig
from ocrstream.store.local import LocalStore
from ocrstream.telemetry import Telemetry, tracer_provider


@pytest.fixture
def rng() -> random.Random:
    return random.Random(os.urandom(8))


def random_words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8))) for _ in range(n))


def make_pdf(pages: list[str], encrypt: str | None = None, red_box: bool = False) -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A6, encrypt=encrypt)
    for text in pages:
        if red_box:
            c.setFillColorRGB(1, 0, 0)
            c.rect(10, 10, 60, 60, fill=1, stroke=0)
            c.setFillColorRGB(0, 0, 0)
        c.setFont("Helvetica", 12)
        c.drawString(20, 250, text)
        c.showPage()
    c.save()
    return buf.getvalue()


def empty_pdf() -> bytes:
    buf = io.BytesIO()
    pdfium.PdfDocument.new().save(buf)
    return buf.getvalue()


def make_tiff(n: int, size=(120, 80)) -> bytes:
    frames = [Image.new("RGB", size, (40 * i % 255, 100, 200)) for i in range(n)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


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


# ---- a tiny random-weight OcrModel (fast on one CPU thread) ------------------------------------
SPECIALS = ["<unk>", "<bos>", "<eos>", "<pad>", "<|grounding|>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>"]


def tiny_tokenizer(vocab_size: int = 96):
    """Character-level tokenizer with the role tokens; ``<image>`` is the last id (the config's)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = [chr(c) for c in range(32, 127)]
    vocab: dict[str, int] = {}
    for t in SPECIALS + ["\n"] + chars:
        if len(vocab) < vocab_size - 1:
            vocab.setdefault(t, len(vocab))
    vocab["<image>"] = vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"<\|?/?[a-z]+\|?>|."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(["<bos>", "<eos>", "<pad>", "<image>"])
    return tok


def tiny_ocr_model(seed: int | None = None, config: str = "tiny"):
    """A random-weight OcrModel; ``config`` tiny (tests) or embedded (the shipped model's size)."""
    import torch

    from ocrstream.model.config import embedded_config, tiny_test_config
    from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
    from ocrstream.model.runtime import OcrModel
    from ocrstream.model.tokenizer import OcrTokenizer

    torch.set_num_threads(1)
    if seed is not None:
        torch.manual_seed(seed)
    cfg = tiny_test_config() if config == "tiny" else embedded_config(vocab_size=96)
    tok = OcrTokenizer(tiny_tokenizer(cfg.decoder.vocab_size), image_token_id=cfg.image_token_id)
    cfg.decoder.bos_token_id = tok.role_id("bos")
    cfg.decoder.eos_token_id = tok.role_id("eos")
    return OcrModel(DeepseekOCRForCausalLM(cfg).eval(), tok)


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
