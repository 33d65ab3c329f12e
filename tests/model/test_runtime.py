"""OcrModel: load a saved snapshot with a real tokenizer, encode, decode, VisionTokens bytes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.modes import Mode, num_vision_tokens
from ocrstream.model.runtime import OcrModel, VisionTokens
from ocrstream.model.tokenizer import OcrTokenizer, resolve_prompt
from ocrstream.model.weights import save_snapshot

from .helpers import make_tokenizer, tiny_config_for

MODE = Mode("t256", 256, 128, True, no_tile_max=200)


@pytest.fixture
def snapshot(tmp_path, seed):
    tok_path = make_tokenizer(tmp_path / "tok")
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tok_path)).get_vocab_size()
    model = DeepseekOCRForCausalLM(tiny_config_for(vocab)).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(std=0.5)
    save_snapshot(model, tmp_path / "snap", tokenizer=tok_path)
    return tmp_path / "snap"


def page(w: int, h: int) -> Image.Image:
    img = Image.new("RGB", (w, h), "white")
    ImageDraw.Draw(img).text((10, 10), "Hello OCR", fill="black")
    return img


def test_prompt_ids_exact(snapshot):
    tok = OcrTokenizer.from_file(snapshot)
    ids = tok.build_input_ids(resolve_prompt("free_ocr") + " ", [5])
    assert ids[:6] == [1, 3, 3, 3, 3, 3]
    assert ids[6:] == tok.encode("\nFree OCR.")
    assert 2 not in ids  # no EOS
    g = tok.build_input_ids(resolve_prompt("markdown"), [2])
    assert g[:3] == [1, 3, 3] and g[3:] == tok.encode("\n<|grounding|>Convert the document to markdown.")
    assert 8 in g  # <|grounding|> is one special id
    with pytest.raises(ValueError, match="tags"):
        tok.build_input_ids("<image><image>x", [3])
    with pytest.raises(ValueError, match="ref"):
        resolve_prompt("locate")
    assert "<|ref|>cat<|/ref|>" in resolve_prompt("locate", ref="cat")


def test_encode_decode_and_batch(snapshot):
    m = OcrModel.load(snapshot)
    vt = m.encode(page(300, 210), MODE)
    assert vt.n_placeholders == num_vision_tokens(MODE, 300, 210)
    assert vt.grid == tile_grid_for(300, 210)
    res = m.decode([vt], prompt="free_ocr", max_new_tokens=8)
    assert len(res) == 1 and res[0].n_tokens == len(res[0].token_ids) <= 8
    assert isinstance(res[0].text, str)
    small = m.encode(page(150, 150), MODE)
    batch = m.decode([vt, small], prompt="grounding", max_new_tokens=6)
    singles = [m.decode([v], prompt="grounding", max_new_tokens=6)[0] for v in (vt, small)]
    assert [r.token_ids for r in batch] == [r.token_ids for r in singles]


def tile_grid_for(w, h):
    from ocrstream.model.modes import tile_grid

    return tile_grid(MODE, w, h)


def test_vision_tokens_bytes_round_trip(snapshot):
    m = OcrModel.load(snapshot)
    vt = m.encode(page(260, 400), MODE)
    back = VisionTokens.from_bytes(vt.to_bytes())
    assert torch.equal(back.embeds, vt.embeds)
    assert (back.mode, back.grid, back.image_size, back.weights_id) == (
        vt.mode,
        vt.grid,
        vt.image_size,
        vt.weights_id,
    )
    bf = VisionTokens(vt.embeds.to(torch.bfloat16), vt.mode, vt.grid, vt.image_size)
    assert torch.equal(VisionTokens.from_bytes(bf.to_bytes()).embeds, bf.embeds)
    assert m.weights_id == OcrModel.load(snapshot).weights_id
    foreign = VisionTokens(vt.embeds, vt.mode, vt.grid, vt.image_size, "other")
    with pytest.raises(ValueError, match="encoder"):
        m.decode([foreign], max_new_tokens=2)


def test_missing_checkpoint_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        OcrModel.load(tmp_path / "nothing")
