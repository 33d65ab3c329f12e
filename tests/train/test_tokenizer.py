"""The project tokenizer shipped with the model."""

from __future__ import annotations

import random

from ocrstream.data.corpus import load_corpus
from ocrstream.train.export import ASSET_DIR
from ocrstream.train.tokenizer import SPECIAL_TOKENS, load_tokenizer, special_ids, train_tokenizer


def test_shipped_tokenizer_round_trips_held_out_text():
    tok = load_tokenizer(ASSET_DIR / "tokenizer.json")
    assert tok.get_vocab_size() == 1024
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert special_ids(tok) == {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, "image_token_id": 3}
    paras = load_corpus()["test"]
    rng = random.Random()
    for p in rng.sample(paras, 50):
        text = p.text[: rng.randrange(1, len(p.text) + 1)]
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text
    odd = "Ünïcode ✓ tabs\tand\nnewlines  <td>cell</td> <|grounding|>"
    ids = tok.encode(odd).ids
    assert tok.decode(ids, skip_special_tokens=False) == odd
    assert tok.token_to_id("<td>") in ids
    # compresses prose: > 2.5 chars per token on held-out text
    text = " ".join(p.text for p in paras[:300])
    assert len(text) / len(tok.encode(text).ids) > 2.5


def test_train_tokenizer_small():
    texts = [f"word{i % 50} other{i % 7} text" for i in range(2000)]
    tok = train_tokenizer(texts, vocab_size=400)
    assert tok.get_vocab_size() <= 400
    assert tok.token_to_id(SPECIAL_TOKENS[0]) == 0
    s = "word12 other3 text"
    assert tok.decode(tok.encode(s).ids) == s
