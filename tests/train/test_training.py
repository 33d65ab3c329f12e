"""Line-reader training on a tiny model: data, losses, schedule, exact resume, export round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ocrstream.data.charset import normalize
from ocrstream.data.corpus import load_corpus
from ocrstream.data.fonts import coverage, font_by_name, train_fonts
from ocrstream.data.lines import LineGenerator
from ocrstream.model.config import tiny_lines_config
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.textdist import cer, corpus_cer
from ocrstream.train.line_batches import compute_loss, make_batch
from ocrstream.train.line_trainer import LineTrainConfig, LineTrainer, lr_at
from ocrstream.train.tokenizer import build_char_tokenizer, special_ids


def tiny_config(vocab_size: int, special: dict[str, int]):
    cfg = tiny_lines_config(vocab_size=vocab_size)
    cfg.image_token_id = special["image_token_id"]
    d = cfg.decoder
    d.bos_token_id, d.eos_token_id, d.pad_token_id = (
        special["bos_token_id"],
        special["eos_token_id"],
        special["pad_token_id"],
    )
    cfg.ngram_whitelist = ()
    cfg.validate()
    return cfg


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def test_lines_are_deterministic_strips_with_normalised_labels(corpus):
    seed = random.randrange(1000)
    a = LineGenerator(corpus["train"], train_fonts(), "train", seed)
    b = LineGenerator(corpus["train"], train_fonts(), "train", seed)
    for i in random.sample(range(100_000), 6):
        x, y = a.line(i), b.line(i)
        assert x.text == y.text and x.font == y.font
        assert np.array_equal(np.asarray(x.strip), np.asarray(y.strip))
        assert x.strip.height == 32 and x.strip.mode == "L"
        assert x.text == normalize(x.text) and x.text
        assert set(x.text) <= coverage(font_by_name(x.font).path) | {" "}


def test_random_lines_share_follows_the_setting(corpus):
    gen = LineGenerator(corpus["train"], train_fonts(), "train", random.randrange(1000), random_share=0.5)
    kinds = [gen.line(i).kind for i in range(200)]
    assert 0.35 < kinds.count("random") / len(kinds) < 0.65


def test_char_tokenizer_round_trips_and_keeps_specials_first(tok):
    sp = special_ids(tok)
    assert (sp["bos_token_id"], sp["eos_token_id"], sp["pad_token_id"], sp["image_token_id"]) == (0, 1, 2, 3)
    text = "Héllo, “world” — 3.14 <image>"
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert len(ids) == len(text) - len("<image>") + 1  # one id per character, <image> is one token


def test_joint_loss_goes_down_on_a_tiny_model(corpus, tok):
    torch.set_num_threads(1)
    sp = special_ids(tok)
    model = DeepseekOCRForCausalLM(tiny_config(tok.get_vocab_size(), sp)).train()
    gen = LineGenerator(corpus["train"], train_fonts(), "train", random.randrange(1000))
    rng = random.Random()
    batch = make_batch([gen.sample(rng) for _ in range(4)], tok, 32, model.config.sam.max_width)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = last = None
    for _ in range(15):
        out = compute_loss(model, batch, tok, sp, rng=rng, ar_rows=2)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        first = first or (out.ctc.item(), out.ar.item())
        last = (out.ctc.item(), out.ar.item())
    assert last[0] < first[0] - 0.5 and last[1] < first[1] - 0.5, (first, last)


def test_decoder_loss_uses_only_the_chosen_rows(corpus, tok):
    sp = special_ids(tok)
    model = DeepseekOCRForCausalLM(tiny_config(tok.get_vocab_size(), sp)).eval()
    gen = LineGenerator(corpus["train"], train_fonts(), "train", random.randrange(1000))
    rng = random.Random()
    batch = make_batch([gen.sample(rng) for _ in range(4)], tok, 32, model.config.sam.max_width)
    with torch.no_grad():
        a = compute_loss(model, batch, tok, sp, corrupt_rate=0.0, ar_rows=2)
        batch.targets[3] = batch.targets[2][:1]  # a row outside the decoder's share changes
        b = compute_loss(model, batch, tok, sp, corrupt_rate=0.0, ar_rows=2)
    assert a.ar.item() == pytest.approx(b.ar.item(), abs=1e-6)
    assert a.ctc.item() != pytest.approx(b.ctc.item(), abs=1e-6)  # CTC sees every row


def test_lr_warms_up_then_decays_to_the_floor():
    tc = LineTrainConfig(steps=1000, warmup=100, lr=1e-3, lr_floor=0.05)
    assert lr_at(0, tc) == pytest.approx(1e-5)
    assert lr_at(99, tc) == pytest.approx(1e-3)
    mid = lr_at(550, tc)
    assert 0.5e-3 < mid < 0.55e-3
    assert lr_at(1000, tc) == pytest.approx(0.05e-3)
    assert all(lr_at(s, tc) >= lr_at(s + 1, tc) for s in range(100, 999))


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setenv("OCRSTREAM_TRAIN_DIR", str(tmp_path))
    torch.set_num_threads(1)
    seed = random.randrange(1000)

    def cfg(run: str, steps: int = 4) -> LineTrainConfig:
        return LineTrainConfig(
            run=run,
            batch=3,
            pool=2,
            steps=steps,
            warmup=2,
            eval_every=1000,
            eval_lines=4,
            threads=1,
            seed=seed,
        )

    whole = LineTrainer(cfg("whole"), make_config=tiny_config)
    whole.run(progress=False)
    # stop early (the checkpoint is at step 3, mid-pool), then a fresh trainer resumes the run
    LineTrainer(cfg("split", steps=3), make_config=tiny_config).run(progress=False)
    resumed = LineTrainer(cfg("split"), make_config=tiny_config)
    assert resumed.state.step == 3
    resumed.run(progress=False)
    assert resumed.state.step == whole.state.step == 4
    for (k, a), (_, b) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), k
    assert (tmp_path / "whole" / "metrics.jsonl").read_text().count("\n") == 4


def test_stage_starts_from_the_earlier_stage_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("OCRSTREAM_TRAIN_DIR", str(tmp_path))
    torch.set_num_threads(1)
    small = {"batch": 2, "pool": 1, "warmup": 1, "eval_every": 1000, "eval_lines": 4, "threads": 1}
    first = LineTrainer(LineTrainConfig(run="a", steps=1, **small), make_config=tiny_config)
    first.run(progress=False)
    second = LineTrainer(
        LineTrainConfig(run="b", steps=1, init=str(tmp_path / "a" / "ckpt.pt"), code_share=0.2, **small),
        make_config=tiny_config,
    )
    for (k, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k
    second.run(progress=False)
    moved = any(
        not torch.equal(a, b)
        for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True)
    )
    assert moved
    # resuming the second stage keeps its own checkpoint, not the init weights
    again = LineTrainer(
        LineTrainConfig(run="b", steps=1, init=str(tmp_path / "a" / "ckpt.pt"), code_share=0.2, **small),
        make_config=tiny_config,
    )
    assert again.state.step == 1
    for (k, a), (_, b) in zip(
        second.model.state_dict().items(), again.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k


def test_export_round_trips_through_the_runtime(tmp_path, monkeypatch, corpus):
    from ocrstream.model.runtime import OcrModel
    from ocrstream.train.export import export

    monkeypatch.setenv("OCRSTREAM_TRAIN_DIR", str(tmp_path))
    tr = LineTrainer(
        LineTrainConfig(
            run="x", batch=2, pool=1, steps=2, warmup=1, eval_every=1000, eval_lines=4, threads=1
        ),
        make_config=tiny_config,
    )
    tr.run(progress=False)
    info = export(tmp_path / "x" / "ckpt.pt", tmp_path / "model")
    assert info["step"] == 2 and info["weights_bytes"] < 40 * 1024 * 1024
    ocr = OcrModel.load(tmp_path / "model")
    assert ocr.model.dtype == torch.float32 and ocr.config.sam.strips and ocr.config.ctc_head
    # the recipe's decoding settings (chosen on validation lines) ship with the weights
    from ocrstream.train.line_recipe import DECODING

    assert {k: getattr(ocr.config, k) for k in DECODING} == DECODING
    # the shipped weights are the trained ones, up to fp16 storage
    shipped = ocr.model.state_dict()
    for k, v in tr.model.state_dict().items():
        assert torch.allclose(shipped[k], v, rtol=2e-3, atol=1e-4), k
    gen = LineGenerator(corpus["test"], train_fonts(), "test", random.randrange(1000), max_width=512)
    lines = [gen.line(i) for i in range(3)]
    ocr.config.line_decoding = "ctc"
    got = ocr.read_line_images([x.strip for x in lines])
    assert len(got) == 3 and all(isinstance(t, str) for t in got)


def test_cer_helpers():
    assert cer("abc", "abc") == 0.0
    assert cer("abcd", "abed") == 0.25
    assert cer("a  b\nc", "a b c") == 0.0  # whitespace runs count once
    assert cer("ﬁne", "fine") == 0.0  # NFKC: the ligature is its letters
    assert cer("", "") == 0.0 and cer("", "x") == 1.0
    assert corpus_cer(["ab", "cdef"], ["ab", "cdxf"]) == pytest.approx(1 / 6)
