"""Grounding parser and the official markdown post-processing."""

from __future__ import annotations

import random

from PIL import Image

from ocrstream.model.grounding import EOS_TEXT, join_pages, parse_boxes, parse_grounding, to_markdown

SAMPLE = (
    "<|ref|>title<|/ref|><|det|>[[100, 50, 899, 120]]<|/det|>\n# Report\n\n"
    "<|ref|>text<|/ref|><|det|>[[100, 150, 899, 400], [100, 420, 500, 480]]<|/det|>\nBody a := b \\coloneqq c\n\n\n\n"
    "<|ref|>image<|/ref|><|det|>[[0, 500, 999, 999]]<|/det|>\n\n"
    "<|ref|>table<|/ref|><|det|>[[10,20,30,40]]<|/det|>\n<table><tr><td>1</td></tr></table>" + EOS_TEXT
)


def test_parse_blocks_and_pixels():
    blocks = parse_grounding(SAMPLE, 1191, 1684)
    assert [b.label for b in blocks] == ["title", "text", "image", "table"]
    assert blocks[0].boxes == [
        (int(100 / 999 * 1191), int(50 / 999 * 1684), int(899 / 999 * 1191), int(120 / 999 * 1684))
    ]
    assert len(blocks[1].boxes) == 2
    assert blocks[2].boxes == [(0, int(500 / 999 * 1684), 1191, 1684)]
    assert blocks[0].content == "# Report"
    assert blocks[3].content.startswith("<table>")


def test_random_boxes_scale(seed):
    rng = random.Random(seed)
    for _ in range(50):
        w, h = rng.randrange(1, 4000), rng.randrange(1, 4000)
        box = [rng.randrange(0, 1000) for _ in range(4)]
        px, raw = parse_boxes(str([box]), w, h)
        assert raw == [tuple(float(v) for v in box)]
        assert px == [
            (int(box[0] / 999 * w), int(box[1] / 999 * h), int(box[2] / 999 * w), int(box[3] / 999 * h))
        ]


def test_no_eval_of_payload():
    evil = "<|ref|>text<|/ref|><|det|>__import__('os').system('echo hi')<|/det|>x"
    blocks = parse_grounding(evil, 100, 100)
    assert blocks[0].boxes == [] and blocks[0].content == "x"
    malformed = "<|ref|>text<|/ref|><|det|>[[1, 2, 3]], [[4, 5, 6, 7]<|/det|>"
    assert parse_grounding(malformed, 999, 999)[0].boxes == [(4, 5, 6, 7)]


def test_markdown_postprocess(tmp_path):
    page = Image.new("RGB", (200, 300), (200, 0, 0))
    md = to_markdown(SAMPLE, 200, 300, page_image=page, out_dir=tmp_path)
    assert "<|ref|>" not in md.text and "<|det|>" not in md.text
    assert "![](images/0.jpg)\n" in md.text
    assert ":= c" in md.text and "\\coloneqq" not in md.text
    assert "\n\n\n" not in md.text
    assert not md.text.endswith(EOS_TEXT) and md.text.startswith("# Report")
    crop = Image.open(tmp_path / "images/0.jpg")
    assert crop.size == (200, 300 - int(500 / 999 * 300))
    assert md.image_files == ["images/0.jpg"]
    assert join_pages(["a", "b"]) == "a\n<--- Page Split --->\nb"
