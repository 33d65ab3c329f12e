"""Decoder guard and ladder: loops and no-stop outputs are retried per the named ladder, then
fall back to the text layer (flagged) or are marked failed; attempts are recorded per page.

The backend is substituted at its protocol (DecoderBackend): it replays scripted outputs so each
ladder path is taken on purpose."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from ocrstream.backends.base import Decoded, Encoded
from ocrstream.cache.base import pack_tokens
from ocrstream.cache.tiers import TokenTiers
from ocrstream.guard import DecodeSettings, GuardConfig, Rung, parse_ladder
from ocrstream.layout import sha256, token_key
from ocrstream.messages import PageDecoded, PageEncoded
from ocrstream.services.decoder.handler import DecoderHandler
from tests.core.test_guard import endless, looping, ok


class Scripted:
    """DecoderBackend replaying one scripted result per (call, page); records its calls."""

    def __init__(self, script):
        self.script = list(script)  # per call: list of Decoded
        self.calls = []

    def decode(self, tokens, prompt, max_new_tokens, temperature=0.0, ngram=None):
        self.calls.append((len(tokens), prompt, temperature, tokens))
        return self.script.pop(0)[: len(tokens)]


class CountingEncoder:
    weights_id = "w1"

    def __init__(self):
        self.calls = []

    def encode(self, images, mode):
        self.calls.append(mode)
        return [Encoded(f"tokens-{mode}".encode(), 7) for _ in images]


def _page(bb, page=1, text_layer=""):
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (page, 2 * page, 3 * page)).save(buf, format="PNG")
    png = buf.getvalue()
    bb.store.put(f"img/{page}.png", png)
    key = token_key(sha256(png), "tiny", "w1")
    bb.cache.set(key, pack_tokens(b"tokens-tiny", 7))
    tkey = ""
    if text_layer:
        tkey = f"text/{page}.txt"
        bb.store.put(tkey, text_layer.encode())
    return PageEncoded(
        job_id="j",
        doc_id="d",
        page=page,
        n_pages=3,
        tokens_key=key,
        image_key=f"img/{page}.png",
        image_hash=sha256(png),
        mode="tiny",
        prompt="markdown",
        weights_id="w1",
        text_layer_key=tkey,
        n_vision_tokens=7,
    )


def _handler(bb, backend, ladder="t=0.0;t=0.4;mode=small", encoder=None):
    tiers = TokenTiers(bb.cache, bb.store, bb.telemetry)
    settings = DecodeSettings(GuardConfig(64), parse_ladder(ladder), (20, 90))
    return DecoderHandler(backend, tiers, bb.store, bb.telemetry, settings, encoder)


def test_first_rung_ok_is_one_batched_call(backbone):
    backend = Scripted([[ok("p1"), ok("p2")]])
    h = _handler(backbone, backend)
    out = h.handle_batch([_page(backbone, 1), _page(backbone, 2)])
    assert len(backend.calls) == 1 and backend.calls[0][:3] == (2, "markdown", 0.0)
    assert backend.calls[0][3] == [b"tokens-tiny", b"tokens-tiny"]
    (a,), (b,) = out
    assert isinstance(a, PageDecoded) and (a.text, a.method, a.failed, b.text) == ("p1", "model", False, "p2")
    assert [x["outcome"] for x in a.attempts] == ["ok"]


def test_retry_temperature_then_mode_then_text_layer(backbone, rng):
    enc = CountingEncoder()
    backend = Scripted([[looping(), ok("good 2")], [endless(rng)], [looping()]])
    h = _handler(backbone, backend, encoder=enc)
    (p1,), (p2,) = h.handle_batch([_page(backbone, 1, text_layer="layer text"), _page(backbone, 2)])
    assert [(c[0], c[2]) for c in backend.calls] == [(2, 0.0), (1, 0.4), (1, 0.0)]
    assert backend.calls[2][3] == [b"tokens-small"]  # the mode rung re-encoded in "small"
    assert enc.calls == ["small"]
    assert [(x["outcome"], x["temperature"], x["mode"]) for x in p1.attempts] == [
        ("loop", 0.0, None),
        ("no_stop", 0.4, None),
        ("loop", 0.0, "small"),
    ]
    assert (p1.method, p1.failed, p1.text, p1.n_text_tokens) == ("text_layer", True, "layer text", 0)
    assert (p2.method, p2.failed, p2.text) == ("model", False, "good 2")
    # the mode rung's tokens are cached: the same rung later costs no encoder call
    h2 = _handler(backbone, Scripted([[looping()], [looping()], [ok("small ok")]]), encoder=enc)
    ((p1b,),) = h2.handle_batch([_page(backbone, 1)])
    assert enc.calls == ["small"] and p1b.method == "model" and p1b.text == "small ok"


def test_no_text_layer_marks_failed_and_keeps_best_effort(backbone):
    backend = Scripted([[looping()], [looping()]])
    h = _handler(backbone, backend, ladder="t=0.0;t=0.9")
    ((p,),) = h.handle_batch([_page(backbone, 3)])
    assert (p.method, p.failed, len(p.attempts)) == ("failed", True, 2)
    assert p.text == looping().text


def test_lost_tokens_without_encoder_fail_the_page_not_the_batch(backbone):
    page = _page(backbone, 1)
    backbone.cache.delete(page.tokens_key)
    h = _handler(backbone, Scripted([[ok("other")]]))
    (lost,), (fine,) = h.handle_batch([page, _page(backbone, 2)])
    assert (lost.method, lost.failed) == ("failed", True)
    assert "neither the cache nor the store" in lost.attempts[-1]["detail"]
    assert fine.text == "other"


def test_grounding_output_becomes_markdown_and_pixel_boxes(backbone):
    raw = "<|ref|>title<|/ref|><|det|>[[0, 0, 999, 499]]<|/det|>\n# Hello"
    page = PageEncoded(**{**_page(backbone, 1).to_dict(), "width": 200, "height": 100})
    ((p,),) = _handler(backbone, Scripted([[ok(raw)]])).handle_batch([page])
    assert (p.text, p.raw) == ("# Hello", raw)
    assert p.boxes == [{"label": "title", "boxes": [[0, 0, 200, 49]], "content": "# Hello"}]


def test_empty_output_on_a_page_with_text_is_a_failure(backbone):
    blank = Decoded("", [], True, 0)
    h = _handler(backbone, Scripted([[blank, blank], [blank]]), ladder="t=0.0;t=0.3")
    (with_text,), (no_text,) = h.handle_batch(
        [_page(backbone, 1, text_layer="real words"), _page(backbone, 2)]
    )
    assert [a["outcome"] for a in with_text.attempts] == ["empty", "empty"]
    assert (with_text.method, with_text.text) == ("text_layer", "real words")
    # a page without a text layer may really be blank
    assert (no_text.method, no_text.failed, no_text.text) == ("model", False, "")


def test_text_layer_agreement_recorded(backbone, rng):
    from ocrstream.guard import agreement

    words = " ".join(rng.choice(["alpha", "beta", "gamma"]) for _ in range(20))
    assert agreement(words, words) == 1.0 and agreement("", words) == 0.0 and agreement("", "") == 1.0
    assert agreement(words + "xyz", words) == pytest.approx(1 - 3 / len(words))
    h = _handler(backbone, Scripted([[ok("completely different"), ok(words)]]))
    (bad,), (good,) = h.handle_batch(
        [_page(backbone, 1, text_layer=words), _page(backbone, 2, text_layer=words)]
    )
    assert bad.method == good.method == "model"
    assert bad.text_layer_agreement < 0.3 and good.text_layer_agreement == 1.0
    ((none,),) = _handler(backbone, Scripted([[ok("x")]])).handle_batch([_page(backbone, 3)])
    assert none.text_layer_agreement == -1.0


def test_wiring_decodes_with_the_configured_settings(backbone, rng, tiny_model):
    from ocrstream.services.wiring import build_handler

    n, window, budget = rng.randint(2, 30), rng.randint(31, 120), rng.randint(8, 64)
    env = {
        "OCRSTREAM_DECODER_NGRAM": str(n),
        "OCRSTREAM_DECODER_NGRAM_WINDOW": str(window),
        "OCRSTREAM_DECODER_MAX_NEW_TOKENS": str(budget),
        "OCRSTREAM_DECODER_LADDER": "t=0.0;t=0.9",
    }
    h = build_handler("decoder", backbone, tiny_model, env)
    assert h.settings == DecodeSettings(GuardConfig(budget), (Rung(0.0), Rung(0.9)), (n, window))
    assert h.encoder is not None  # the mode rung's encoder: the shared encode step, not the encoder service
