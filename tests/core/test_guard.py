"""The decode policy every entry point shares (``ocrstream.guard``): settings from config, the loop
guard, the ladder walk (also the context API's read-back), seeded sampled rungs."""

from __future__ import annotations

import pytest

from ocrstream.backends.base import Decoded
from ocrstream.config import DecoderConfig
from ocrstream.errors import NotFound, StoreUnavailable
from ocrstream.guard import (
    DecodeSettings,
    GuardConfig,
    PageRead,
    Rung,
    check,
    find_loop,
    parse_ladder,
    read_down_ladder,
    sampling_seed,
)


def ok(text="fine text"):
    return Decoded(text, [5, 6, 7, 8], True, 4)


def looping(n=40):
    return Decoded("ab" * n, [1, 2] * n, False, 2 * n)


def endless(rng, n=64):
    ids = [rng.randrange(1000) for _ in range(n)]
    return Decoded("x" * n, ids, False, n)


def test_ladder_parse_and_errors():
    assert parse_ladder("t=0.0; t=0.3;mode=small") == (Rung(0.0), Rung(0.3), Rung(0.0, "small"))
    for bad in ("", "t=hot", "temp=0.1", "mode="):
        with pytest.raises(ValueError, match="ladder|rung"):
            parse_ladder(bad)


def test_loop_detection(rng):
    cfg = GuardConfig(max_new_tokens=64)
    head = [rng.randrange(100, 200) for _ in range(30)]
    period = [rng.randrange(100) for _ in range(rng.randint(1, 9))]
    assert find_loop(head + period * 30, cfg).startswith(f"period {len(period)}")
    assert find_loop(list(range(300)), cfg) == ""
    assert check(ok(), cfg) == ("ok", "")
    assert check(endless(rng), cfg)[0] == "no_stop"
    assert check(looping(), cfg)[0] == "loop"


def test_settings_come_from_the_decoder_config(rng):
    n, window, budget = rng.randint(2, 40), rng.randint(40, 200), rng.randint(8, 4096)
    d = DecoderConfig(max_new_tokens=budget, ngram=n, ngram_window=window, ladder="t=0.0;mode=small")
    s = DecodeSettings.from_config(d)
    assert (s.max_new_tokens, s.ngram, s.ladder) == (budget, (n, window), (Rung(0.0), Rung(0.0, "small")))
    assert s.guard == GuardConfig(budget, d.loop_min_repeats, d.loop_min_tokens)
    assert DecodeSettings.from_config(DecoderConfig(ngram=0)).ngram is None
    assert DecodeSettings.from_config() == DecodeSettings.from_config(DecoderConfig())


class Script:
    """A decode function replaying one scripted result per (call, page); records its calls."""

    def __init__(self, script):
        self.script, self.calls = list(script), []

    def __call__(self, i, rung, prompt, blobs):
        self.calls.append((i, rung, prompt, list(blobs)))
        return self.script.pop(0)[: len(blobs)]


def test_ladder_walk_groups_by_prompt_and_stops_at_the_first_ok(rng):
    settings = DecodeSettings(GuardConfig(64), parse_ladder("t=0.0;t=0.5;mode=small"), None)
    pages = [PageRead("a"), PageRead("b"), PageRead("a")]
    blobs = {id(p): f"tok{i}".encode() for i, p in enumerate(pages)}
    decode = Script([[looping(), ok("a2")], [endless(rng)], [ok("a1")], [ok("b")]])

    def tokens(p, rung):
        if rung.mode == "small":
            raise NotFound("no small tokens")  # a rung's permanent error is that rung's attempt
        return blobs[id(p)]

    read_down_ladder(pages, settings, decode, tokens)
    assert [(c[0], c[2], c[3]) for c in decode.calls] == [
        (0, "a", [b"tok0", b"tok2"]),
        (0, "b", [b"tok1"]),
        (1, "a", [b"tok0"]),
        (1, "b", [b"tok1"]),
    ]  # the mode rung never ran: every page was done
    a1, b, a2 = pages
    assert (a1.done, a1.best.text, [x["outcome"] for x in a1.attempts]) == (True, "a1", ["loop", "ok"])
    assert (a2.done, [x["outcome"] for x in a2.attempts]) == (True, ["ok"])
    assert b.done and [x["outcome"] for x in b.attempts] == ["no_stop", "ok"]
    assert all(p.decode_ms >= 0 for p in pages)


def test_ladder_walk_judge_rungs_and_errors():
    settings = DecodeSettings(GuardConfig(64), parse_ladder("t=0.0;mode=small;t=0.3"), None)

    def judge(p, res):
        return ("empty", "no text") if not res.text.strip() else ("ok", "")

    page = PageRead("p")
    decode = Script([[ok(" ")], [ok("")], [ok("")]])
    read_down_ladder([page], settings, decode, lambda p, r: b"t", judge=judge)
    # every rung ran (the mode rung got tokens), every answer judged empty: not done, best = the first
    assert [x["outcome"] for x in page.attempts] == ["empty"] * 3
    assert [c[1] for c in decode.calls] == list(settings.ladder)
    assert not page.done and page.best.text == " "
    only = PageRead("p")
    rungs = [Rung(0.0), Rung(0.3)]
    read_down_ladder([only], settings, Script([[looping()], [ok()]]), lambda p, r: b"t", rungs=rungs)
    assert [(x["temperature"], x["mode"], x["outcome"]) for x in only.attempts] == [
        (0.0, None, "loop"),
        (0.3, None, "ok"),
    ]

    def down(p, r):
        raise StoreUnavailable("down")

    with pytest.raises(StoreUnavailable):  # a transient error is the caller's to retry
        read_down_ladder([PageRead("p")], settings, Script([]), down)


def test_sampled_rungs_are_seeded_by_what_they_decode(rng):
    blobs = [rng.randbytes(rng.randint(1, 64)) for _ in range(3)]
    assert sampling_seed(blobs, "free_ocr", 0.0) is None  # greedy needs no seed
    seed = sampling_seed(blobs, "free_ocr", 0.5)
    assert seed == sampling_seed(list(blobs), "free_ocr", 0.5)
    assert (
        len({seed, sampling_seed(blobs[::-1], "free_ocr", 0.5), sampling_seed(blobs, "markdown", 0.5)}) == 3
    )
    assert sampling_seed(blobs, "free_ocr", 0.7) != seed
