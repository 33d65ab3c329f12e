"""Line-strip models: the strip encoder, page -> lines geometry, the runtime's lines modes, page text."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ocrstream.model.config import DeepseekOCRConfig, tiny_lines_config
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.lines import (
    find_text_lines,
    line_strip,
    pad_strip,
    split_wide,
    strip_box,
    strips_to_tensor,
)
from ocrstream.model.modes import get_mode
from ocrstream.model.page_text import page_text
from ocrstream.model.runtime import OcrModel, VisionTokens, view_blobs


@pytest.fixture
def strip_model(seed):
    model = DeepseekOCRForCausalLM(tiny_lines_config()).eval()
    with torch.no_grad():
        model.ctc_head.weight.normal_(std=1.0)
        model.lm_head.weight.normal_(std=0.5)
    return model


def _bars_page(rng: random.Random, columns: int = 1) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A white page with dark bars as text lines of random lengths (boxes in reading order)."""
    img = Image.new("RGB", (800, 1000), (255, 255, 255))
    d = ImageDraw.Draw(img)
    boxes = []
    col_w = 700 // columns
    for c in range(columns):
        y = 60
        while y < 900:
            x0 = 50 + c * (col_w + 20)
            w = rng.randint(60, col_w - 40)
            h = rng.randint(14, 20)
            x = x0
            while x < x0 + w - 8:  # "words" of "letters" (strokes with gaps), not a solid rule
                wx = min(x0 + w, x + rng.randint(8, 50))
                while x < wx:
                    d.rectangle((x, y, x + 3, y + h), fill=(0, 0, 0))
                    end = x + 3
                    x += 6
                x = end + rng.randint(6, 10)
            boxes.append((x0, y, end + 1, y + h + 1))
            y += h + rng.randint(12, 30)
    return img, boxes


def test_strip_encoder_gives_one_token_row_per_strip(strip_model):
    cfg = strip_model.config.sam
    assert cfg.token_px == (32, 8) and cfg.width_multiple == 32
    w = 32 * random.randint(1, cfg.max_width // 32)
    feats = strip_model.encode_strips(torch.randn(3, 3, 32, w))
    assert feats.projected.shape == (3, w // 8, strip_model.config.decoder.hidden_size) and feats.rows == 1
    with pytest.raises(ValueError, match="multiple of 32"):
        strip_model.encode_strips(torch.randn(1, 3, 32, w + 8))
    with pytest.raises(ValueError, match="strips"):
        strip_model.encode_strips(torch.randn(1, 3, 48, 64))


def test_a_strips_tokens_do_not_depend_on_its_batch(strip_model):
    """The runtime batches strips of one padded width together (CLIP attends over the whole strip,
    padding included): each strip's tokens then equal those it gets alone."""
    w = 32 * random.randint(1, 6)
    strips = [
        Image.fromarray(np.random.randint(0, 255, (32, w - random.randint(0, 31)), dtype=np.uint8))
        for _ in range(5)
    ]
    alone = [strip_model.encode_strips(strips_to_tensor([pad_strip(s, 32)])).projected[0] for s in strips]
    batch = strip_model.encode_strips(strips_to_tensor([pad_strip(s, 32) for s in strips])).projected
    for i, a in enumerate(alone):
        assert torch.allclose(batch[i], a, atol=1e-5), i


def test_official_config_keeps_square_views_and_has_no_ctc_head():
    from ocrstream.model.config import official_config

    cfg = official_config()
    assert not cfg.sam.strips and not cfg.ctc_head and cfg.sam.stem_chans == ()
    with torch.device("meta"):
        model = DeepseekOCRForCausalLM(cfg, init=False)
    assert not hasattr(model, "ctc_head")
    assert not any(k.startswith("model.sam_model.stem") for k in model.state_dict())


def test_strip_config_round_trips_through_config_json():
    cfg = tiny_lines_config()
    cfg.compression_modes, cfg.line_decoding, cfg.ctc_confidence = ("lines", "lines-50"), "fallback", 0.75
    back = DeepseekOCRConfig.from_hf_dict(cfg.to_hf_dict())
    assert back.sam == cfg.sam and back.clip == cfg.clip and back.ctc_head
    assert (back.compression_modes, back.line_decoding, back.ctc_confidence) == (
        ("lines", "lines-50"),
        "fallback",
        0.75,
    )


@pytest.mark.parametrize("columns", [1, 2])
def test_find_text_lines_in_reading_order(columns):
    rng = random.Random()
    img, boxes = _bars_page(rng, columns)
    lines = find_text_lines(img)
    assert [ln.box for ln in lines] == boxes
    assert [ln.column for ln in lines] == sorted(ln.column for ln in lines)
    assert len({ln.column for ln in lines}) == columns


def test_a_title_in_larger_type_is_a_heading_with_or_without_descenders():
    """Type size is read from the top of the ink to the baseline: a short title with no descenders
    ("Definitions") in 1.5x type is a heading; body lines (with descenders) and a body-size line
    without descenders are not."""
    from ocrstream.data.fonts import load_font, train_fonts

    rng = random.Random()
    face = rng.choice([f for f in train_fonts() if "Mono" not in f.name])
    body = rng.randint(18, 26)
    title = rng.choice(["Definitions", "Mozilla Public License", "Terms and Conditions"])
    texts = [title, "a body line with descenders: gypsy jumping quickly", "Another line", "plain"]
    img = Image.new("RGB", (1400, 500), "white")
    d = ImageDraw.Draw(img)
    y = 30
    for i, t in enumerate(texts):
        size = int(body * 1.5) if i == 0 else body
        d.text((40, y), t, fill="black", font=load_font(face.path, size))
        y += int(size * 2.2)
    lines = find_text_lines(img)
    ctx = (face.name, body, title)
    assert len(lines) == len(texts), ctx
    assert [ln.heading for ln in lines] == [True, False, False, False], ctx


def test_strip_geometry_scales_the_band_and_pads_to_the_multiple():
    rng = random.Random()
    band = rng.uniform(12, 40)
    box = (10.0, 50.0, 10.0 + rng.uniform(50, 400), 50.0 + band * rng.uniform(0.5, 1.0))
    x0, y0, x1, y1 = strip_box(box, band)
    assert y1 - y0 == pytest.approx(band * 1.3) and x0 < box[0] and x1 > box[2]
    page = Image.new("L", (600, 200), 255)
    strip = line_strip(page, box, band)
    assert strip.height == 32
    assert strip.width == round((x1 - x0) * 32 / (y1 - y0))
    squeezed = line_strip(page, box, band, squeeze=0.5)
    assert abs(squeezed.width - strip.width / 2) <= 1
    padded = pad_strip(strip, 32)
    assert padded.width % 32 == 0 and padded.width - strip.width < 32
    wide = Image.new("L", (1000, 32), 255)
    ImageDraw.Draw(wide).rectangle((0, 8, 999, 24), fill=0)
    assert [p.width for p in split_wide(wide, 384)] == [384, 384, 232]


def test_lines_modes_parse():
    m = get_mode("lines")
    assert m.lines and m.squeeze == 1.0 and m.name == "lines"
    h = get_mode("lines-50")
    assert h.lines and h.squeeze == 0.5 and h.name == "lines-50"
    with pytest.raises(ValueError):
        get_mode("lines-5")


class _CharTok:
    """The smallest real tokenizer for the runtime: a character-level tokenizers.Tokenizer."""

    @staticmethod
    def make(vocab: int):
        from ocrstream.model.tokenizer import OcrTokenizer
        from ocrstream.train.tokenizer import build_char_tokenizer

        charset = "".join(chr(c) for c in range(32, 32 + vocab - 17))
        return OcrTokenizer(build_char_tokenizer(charset), image_token_id=3)


def _lines_runtime(model) -> OcrModel:
    from ocrstream.train.tokenizer import special_ids

    tok = _CharTok.make(model.config.decoder.vocab_size)
    sp = special_ids(tok.tok)
    cfg = model.config
    cfg.image_token_id = sp["image_token_id"]
    cfg.decoder.bos_token_id, cfg.decoder.eos_token_id, cfg.decoder.pad_token_id = (
        sp["bos_token_id"],
        sp["eos_token_id"],
        sp["pad_token_id"],
    )
    assert tok.vocab_size == cfg.decoder.vocab_size
    return OcrModel(model, tok)


@pytest.mark.parametrize("method", ["ctc", "ar", "guided"])
def test_runtime_reads_every_line_of_a_page_like_each_strip_alone(strip_model, method):
    ocr = _lines_runtime(strip_model)
    ocr.config.line_decoding = method
    img, boxes = _bars_page(random.Random(), 2)
    vt = ocr.encode(img, "lines")
    assert vt.views == len(boxes) == len(vt.lines) and sum(vt.view_lengths) == vt.n_placeholders
    back = VisionTokens.from_bytes(vt.to_bytes())
    assert back.view_lengths == vt.view_lengths and back.lines == vt.lines
    assert torch.equal(back.embeds, vt.embeds)
    page = ocr.decode([back], prompt="free_ocr", max_new_tokens=12)[0]
    alone = [ocr.read_strips([v], 12)[0] for v in back.split_views()]
    want = [ocr.tokenizer.decode(s, skip_special_tokens=True).strip() for s in alone]
    assert page.text == "\n".join(t for t in want if t)
    # a remote decoder gets one blob per strip, each with its own line record
    blobs = view_blobs(vt.to_bytes())
    assert len(blobs) == vt.views
    one = VisionTokens.from_bytes(blobs[1])
    assert one.view_lengths == (vt.view_lengths[1],) and one.lines == (vt.lines[1],)


def test_guided_decoding_follows_a_confident_ctc_head(strip_model):
    """With a CTC head that is sure of a transcript and weight 1, guided decoding returns exactly
    what greedy CTC reads, whatever the (random) decoder prefers."""
    ocr = _lines_runtime(strip_model)
    n, hidden = 24, ocr.config.decoder.hidden_size
    view = torch.randn(n + 2, hidden)
    rng = random.Random()
    target = [rng.randrange(20, ocr.config.decoder.vocab_size - 1) for _ in range(8)]
    with torch.no_grad():  # a CTC head that maps token t to a fixed label: blank, c1, blank, c2, ...
        ocr.model.ctc_head.weight.zero_()
        ocr.model.ctc_head.bias.fill_(-30.0)
    path = [ocr.config.decoder.pad_token_id] * n
    for k, c in enumerate(target):
        path[2 * k + 1] = c
    logits = torch.full((1, n, ocr.config.decoder.vocab_size), -30.0)
    for t, c in enumerate(path):
        logits[0, t, c] = 30.0
    ocr.model.ctc_logits = lambda tokens: logits[:, : tokens.shape[1]].expand(tokens.shape[0], -1, -1)
    ocr.config.line_decoding, ocr.config.ctc_weight = "ctc", 1.0
    assert ocr.read_strips([view])[0] == target
    ocr.config.line_decoding = "guided"
    assert ocr.read_strips([view], 32)[0] == target


def test_page_text_formats():
    from ocrstream.model.grounding import parse_grounding, to_markdown
    from ocrstream.model.lines import TextLine

    lines = [
        TextLine((100, 50, 600, 90), 40, 0, heading=True),
        TextLine((100, 120, 700, 140), 20, 0, gap_before=1.5),
        TextLine((100, 150, 690, 170), 20, 0, gap_before=0.5),
        TextLine((100, 180, 300, 200), 20, 0, gap_before=0.5),
        TextLine((100, 260, 400, 280), 20, 0, gap_before=3.0),
        TextLine((100, 290, 250, 310), 20, 0, gap_before=0.5),
    ]
    texts = ["A Title", "first line of a paragraph", "goes on here", "and ends.", "code line one", "x = 2"]
    size = (800, 1000)
    assert page_text(lines, texts, "<image>\nFree OCR.", size) == "\n".join(texts)
    md = page_text(lines, texts, "<image>\n<|grounding|>Convert the document to markdown.", size)
    out = to_markdown(md, *size)
    assert out.text.split("\n\n") == [
        "## A Title",
        "first line of a paragraph goes on here and ends.",
        "code line one\nx = 2",  # short lines keep their breaks
    ]
    assert [b.label for b in out.blocks] == ["title", "text", "text"]
    # boxes travel on the 0-999 grid: back in pixels within the grid's rounding
    assert np.allclose(out.blocks[1].boxes[0], (100, 120, 700, 200), atol=1.5)
    grounded = parse_grounding(page_text(lines, texts, "<image>\n<|grounding|>OCR this image.", size), *size)
    assert [b.label for b in grounded] == texts
    assert np.allclose([b.boxes[0] for b in grounded], [ln.box for ln in lines], atol=1.5)


def test_fallback_reads_sure_strips_by_ctc_and_the_rest_with_the_decoder(strip_model, monkeypatch):
    ocr = _lines_runtime(strip_model)
    n, hidden, vocab = 20, ocr.config.decoder.hidden_size, ocr.config.decoder.vocab_size
    views = [torch.randn(n + 2, hidden) for _ in range(3)]
    rng = random.Random()
    target = [rng.randrange(20, vocab - 1) for _ in range(6)]
    logits = torch.full((3, n, vocab), -30.0)
    for t in range(n):  # row 0 and 2: a sure path; row 1: every frame split between two labels
        c = target[t // 2] if t % 2 and t // 2 < len(target) else ocr.config.decoder.pad_token_id
        logits[[0, 2], t, c] = 30.0
        logits[1, t, c] = 0.0
        logits[1, t, 20] = 0.0
    ocr.model.ctc_logits = lambda tokens: logits[: tokens.shape[0], : tokens.shape[1]]
    calls = []
    real = ocr._decode_guided
    monkeypatch.setattr(
        ocr,
        "_decode_guided",
        lambda v, lg, k, m, mode, method: calls.append(len(v)) or real(v, lg, k, m, mode, method),
    )
    ocr.config.line_decoding = "fallback"
    out = ocr._read_strip_batch(views, 16, "lines")
    assert out[0] == out[2] == target
    assert calls == [1]  # only the unsure strip went through the decoder
