"""Training machinery on a tiny model: the loss goes down, the reading head is blind to text,
checkpoints resume, and the CER helper."""

from __future__ import annotations

import json
import random

import pytest
import torch

from ocrstream.data.corpus import load_corpus
from ocrstream.data.fonts import train_fonts
from ocrstream.data.render import PageGenerator
from ocrstream.model.config import tiny_test_config
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.train.batches import make_batch
from ocrstream.train.evaluate import cer, word_accuracy
from ocrstream.train.export import ASSET_DIR
from ocrstream.train.objective import Trainee, compute_loss, image_gap
from ocrstream.train.recipe import n_placeholders
from ocrstream.train.tokenizer import load_tokenizer, special_ids

SIDE = 128


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(ASSET_DIR / "tokenizer.json")


def tiny_trainee(tok) -> Trainee:
    cfg = tiny_test_config(vocab_size=tok.get_vocab_size())
    sp = special_ids(tok)
    cfg.image_token_id = sp["image_token_id"]
    cfg.decoder.bos_token_id, cfg.decoder.eos_token_id, cfg.decoder.pad_token_id = 0, 1, 2
    cfg.ngram_whitelist = ()
    return Trainee(DeepseekOCRForCausalLM(cfg))


def pages(n: int, level: int = 1):
    gen = PageGenerator(
        load_corpus()["train"], train_fonts(), SIDE, split="train", seed=random.randrange(1000)
    )
    return [gen.page(i, level) for i in range(n)]


def test_tiny_training_lowers_loss(tok):
    torch.set_num_threads(1)
    tr = tiny_trainee(tok)
    batch = make_batch(pages(4), tok, n_placeholders(SIDE), special_ids(tok))
    opt = torch.optim.AdamW(tr.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        out = compute_loss(tr, batch)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        losses.append(out.ar.item())
    assert losses[-1] < losses[0] - 1.0, losses
    gap = image_gap(tr, batch)
    assert set(gap) >= {"ce_real", "ce_blank", "ce_other", "gap_blank", "gap_other"}
    assert all(torch.isfinite(torch.tensor(v)) for v in gap.values())


def test_reading_queries_cannot_see_text(tok):
    """Changing the AR text inputs changes AR logits but not the reading-head loss."""
    tr = tiny_trainee(tok).eval()
    batch = make_batch(pages(3, level=2), tok, n_placeholders(SIDE), special_ids(tok))
    base = batch.targets[:, :-1].clamp_min(0)
    other = torch.randint(20, tok.get_vocab_size(), base.shape)
    with torch.no_grad():
        a = compute_loss(tr, batch, ar_inputs=base)
        b = compute_loss(tr, batch, ar_inputs=other)
        c = compute_loss(tr, batch, ar_inputs=base, pixels=torch.ones_like(batch.pixels))
    assert abs(a.read.item() - b.read.item()) < 1e-5
    assert abs(a.ar.item() - b.ar.item()) > 1e-4
    assert abs(a.read.item() - c.read.item()) > 1e-5  # but it does see the image


def test_trainer_checkpoint_resume(tmp_path, monkeypatch):
    from ocrstream.train import loop

    monkeypatch.setattr(loop, "build_trainee", lambda tok: tiny_trainee(tok))
    tc = loop.TrainConfig(
        run="t", steps=2, batch=2, eval_every=2, save_every=1, val_pages=2, size=SIDE, warmup=2
    )
    t1 = loop.Trainer(tc, tmp_path)
    st = t1.run(progress=False)
    assert st.step == 2 and st.pages == 4 and (tmp_path / "ckpt.pt").exists()
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2
    w1 = {k: v.clone() for k, v in t1.tr.state_dict().items()}
    tc.steps = 3
    t2 = loop.Trainer(tc, tmp_path)
    assert t2.state.step == 2
    assert all(torch.equal(w1[k], v) for k, v in t2.tr.state_dict().items())
    assert t2.run(progress=False).step == 3


def test_cer_and_word_accuracy():
    assert cer("hello world", "hello world") == 0.0
    assert cer("hello\nworld", "hello   world ") == 0.0  # whitespace collapsed
    assert cer("abcd", "abxd") == pytest.approx(0.25)
    assert cer("abcd", "") == 1.0
    assert cer("", "") == 0.0
    assert cer("ab", "abcdef") == pytest.approx(2.0)
    assert word_accuracy("a b c d", "a b x d") == pytest.approx(0.75)


def test_glyph_targets_mark_each_character_at_its_patch():
    from PIL import ImageFont

    from ocrstream.data.render import Page
    from ocrstream.train.batches import GLYPH_CLASSES, GLYPH_FIRST, glyph_targets

    rng = random.Random()
    font = ImageFont.truetype(train_fonts()[0].path, rng.randint(20, 40))
    word = "".join(rng.choices("ABCDEFGHKMNPRSTWXYZ", k=rng.randint(3, 6)))
    x, y = float(rng.randint(0, 40)), float(rng.randint(0, 200))
    page = Page(None, word, word, "f", 0, "s", {}, [(x, y, word, font)])
    t = glyph_targets([page], 256, grid=16)  # [1, 256, C]
    assert t.shape == (1, 256, GLYPH_CLASSES)
    assert torch.allclose(t.sum(-1), torch.ones(1, 256))
    row = int((y + font.size * 0.6) // 16)
    for i, ch in enumerate(word):
        centre = x + 0.5 * (font.getlength(word[:i]) + font.getlength(word[: i + 1]))
        assert t[0, row * 16 + int(centre // 16), 1 + ord(ch) - GLYPH_FIRST] > 0, (word, i)
    inked = t[0, :, 0] < 1
    assert int(inked.sum()) <= len(word) and set(inked.nonzero().flatten().tolist()) <= set(
        range(row * 16, row * 16 + 16)
    )


def test_glyph_loss_trains_the_glyph_head(tok):
    torch.manual_seed(random.randrange(1 << 30))
    tr = tiny_trainee(tok)
    batch = make_batch(pages(4, level=0), tok, n_placeholders(SIDE), special_ids(tok))
    assert batch.glyph_targets is not None
    out = compute_loss(tr, batch, glyph_weight=1.0)
    assert out.glyph.item() > 0
    out.total.backward()
    assert tr.glyph_head.weight.grad is not None and tr.glyph_head.weight.grad.abs().sum() > 0
    assert out.cell_glyph.item() > 0 and tr.cell_glyph_head.weight.grad.abs().sum() > 0


def test_cell_major_puts_each_patch_in_its_vision_token_cell():
    from ocrstream.train.objective import CELL_PATCHES, cell_major

    grid = 4 * random.randint(1, 4)
    t = torch.rand(2, grid * grid, 5)
    out = cell_major(t, grid)
    q = grid // 4
    assert out.shape == (2, q * q, CELL_PATCHES, 5)
    for _ in range(20):
        r, c = random.randrange(grid), random.randrange(grid)
        cell, sub = (r // 4) * q + c // 4, (r % 4) * 4 + c % 4
        assert torch.equal(out[:, cell, sub], t[:, r * grid + c])


def test_token_cells_point_at_the_cell_showing_each_token(tok):
    from PIL import ImageFont

    from ocrstream.data.render import Page
    from ocrstream.train.batches import IGNORE, token_cells

    rng = random.Random()
    font = ImageFont.truetype(train_fonts()[0].path, rng.randint(18, 30))
    lines = ["".join(rng.choices("abcdefghkmnprstwxyz", k=rng.randint(3, 9))) for _ in range(3)]
    spans = [
        (float(rng.randint(0, 60)), float(10 + 70 * i + rng.randint(0, 20)), s, font)
        for i, s in enumerate(lines)
    ]
    text = "\n".join(lines)
    page = Page(None, text, text, "f", 0, "s", {}, spans)
    enc = tok.encode(text)
    ids = enc.ids + [1]
    cells = token_cells([page], [enc.offsets], 256, grid=4)[0]
    assert cells.shape == (len(ids),) and cells[-1] == IGNORE  # EOS shows nothing
    for k, (s0, e0) in enumerate(enc.offsets):
        piece = text[s0:e0]
        if not piece.strip():
            assert cells[k] == IGNORE  # newline tokens
            continue
        line = text[:s0].count("\n")
        x, y, s, _ = spans[line]
        at = s0 - sum(len(w) + 1 for w in lines[:line])
        mids = [i for i in range(at, at + len(piece.strip()))]
        i = mids[len(mids) // 2]
        centre = x + 0.5 * (font.getlength(s[:i]) + font.getlength(s[: i + 1]))
        assert cells[k] == int((y + font.size * 0.6) // 64) * 4 + int(centre // 64), (piece, k)


def test_cell_slots_follow_the_prompt_layout():
    from ocrstream.model.deepencoder import layout_image
    from ocrstream.train.objective import cell_slots

    g = random.randint(1, 6)
    tokens = torch.randn(g * g, 8)
    laid = layout_image(tokens, None, (1, 1), torch.full((8,), 7.0), torch.full((8,), 9.0))
    assert torch.equal(laid[cell_slots(g)], tokens)


def test_guide_loss_teaches_heads_where_to_read(tok):
    torch.manual_seed(random.randrange(1 << 30))
    tr = tiny_trainee(tok)
    batch = make_batch(pages(4, level=1), tok, n_placeholders(SIDE), special_ids(tok))
    assert batch.token_cells is not None and (batch.token_cells >= 0).any()
    opt = torch.optim.AdamW(tr.parameters(), lr=3e-3)
    first = compute_loss(tr, batch, guide_weight=1.0)
    assert first.guide.item() > 0
    for _ in range(15):
        out = compute_loss(tr, batch, guide_weight=1.0)
        opt.zero_grad()
        out.guide.backward()
        opt.step()
    last = compute_loss(tr, batch, guide_weight=1.0)
    assert last.guide.item() < first.guide.item() - 0.3, (first.guide.item(), last.guide.item())
    assert last.guide_acc > first.guide_acc
    # the first layer is left free; the upper layers' query and key projections are what learn
    assert tr.guided == list(range(1, len(tr.model.model.layers)))


def test_lr_anneal_decays_to_the_floor():
    from ocrstream.train import loop

    tc = loop.TrainConfig(warmup=5)
    n, start = random.randint(10, 500), random.randint(100, 1000)
    lrs = [loop.lr_for("vision", s, tc, 0, start, n) for s in range(start, start + n + 10)]
    assert lrs[0] == pytest.approx(tc.lr)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] == pytest.approx(tc.lr * tc.anneal_floor)
    assert loop.lr_for("vision", start, tc, 0, -1, n) == pytest.approx(tc.lr)  # no decay unless started


def test_resumed_run_keeps_its_lr_decay(tmp_path, monkeypatch):
    from ocrstream.train import loop

    monkeypatch.setattr(loop, "build_trainee", lambda tok: tiny_trainee(tok))
    kw = dict(run="t", batch=2, eval_every=100, save_every=1, val_pages=2, size=SIDE, warmup=1)
    loop.Trainer(loop.TrainConfig(steps=2, anneal_steps=4, **kw), tmp_path).run(progress=False)
    t2 = loop.Trainer(loop.TrainConfig(steps=3, **kw), tmp_path)  # resumed without --anneal-steps
    assert (t2.state.anneal_from, t2.state.anneal_steps) == (0, 4)
    t2.run(progress=False)
    lr = t2.opt.param_groups[0]["lr"]
    assert lr == pytest.approx(loop.lr_for("vision", 2, t2.tc, 0, 0, 4)) and lr < t2.tc.lr


def test_smaller_views_match_what_the_runtime_feeds_that_mode():
    from ocrstream.model.modes import Mode, preprocess
    from ocrstream.train.batches import at_view, pixels_from_pages

    side = random.choice((48, 64, 80, 96))
    ps = pages(3, level=random.choice((0, 1, 2)))
    views = [at_view(p, side) for p in ps]
    want = torch.stack([preprocess(p.image, Mode(str(side), side, side, False)).global_view for p in ps])
    got = pixels_from_pages(views)
    assert got.shape == (3, 3, side, side)
    assert torch.allclose(got, want, atol=1e-5)
    # geometry labels are for the rendered size: a smaller view has none, the text is unchanged
    assert all(v.spans == [] and v.text == p.text for v, p in zip(views, ps, strict=True))
    assert at_view(ps[0], SIDE) is ps[0]


def test_trainer_reads_smaller_views_too(tmp_path, monkeypatch):
    from ocrstream.train import loop

    monkeypatch.setattr(loop, "build_trainee", lambda tok: tiny_trainee(tok))
    small = random.choice((64, 96))
    tc = loop.TrainConfig(
        run="t", steps=6, batch=2, eval_every=3, save_every=3, val_pages=2, size=SIDE, warmup=1,
        view_sizes=(small,), view_prob=1.0, view_max_level=0, start_level=0, max_level=0,
    )  # fmt: skip
    prefixes = []
    real = loop.make_batch
    monkeypatch.setattr(loop, "make_batch", lambda p, *a, **k: prefixes.append(a[1]) or real(p, *a, **k))
    t = loop.Trainer(tc, tmp_path)
    t.run(progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["side"] for r in rows] == [small] * 6  # every level-0 batch at the small view
    assert prefixes[-6:] == [n_placeholders(small)] * 6
    assert all(torch.isfinite(torch.tensor(rows[i][f"V{small}_L1_ce_real"])) for i in (2, 5))
    # above view_max_level, batches stay at the training size
    t.tc.view_max_level, t.state.top_level, t.tc.start_level = -1, 1, 1
    assert t.step()["side"] == SIDE
