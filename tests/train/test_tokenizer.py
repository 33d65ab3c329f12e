"""The project tokenizer shipped with the model."""

from __future__ import annotations

import random

from ocrstream.data.corpus import load_corpus
from ocrstream.train.export import ASSET_DIR
from ocrstream.train.tokenizer import SPECIAL_TOKENS, load_tokenizer, special_ids, train_tokenizer


def test_shipped_tokenizer_is_the_line_readers_character_vocabulary():
    from ocrstream.data.charset import CHARSET
    from ocrstream.textdist import normalize
    from ocrstream.train.tokenizer import UNK, build_char_tokenizer

    tok = load_tokenizer(ASSET_DIR / "tokenizer.json")
    assert tok.get_vocab() == build_char_tokenizer().get_vocab()
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert special_ids(tok) == {"bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, "image_token_id": 3}
    paras = load_corpus()["test"]
    rng = random.Random()
    for p in rng.sample(paras, 50):  # held-out text: one id per character, and back
        text = "".join(c for c in normalize(p.text[: rng.randrange(1, len(p.text) + 1)]) if c in CHARSET)
        ids = tok.encode(text).ids
        assert len(ids) == len(text) and tok.decode(ids, skip_special_tokens=False) == text
    # a character outside the charset is one <unk>, not a crash or a silent drop
    assert tok.encode("a\u2713b").ids == [tok.token_to_id("a"), tok.token_to_id(UNK), tok.token_to_id("b")]


def test_train_tokenizer_small():
    texts = [f"word{i % 50} other{i % 7} text" for i in range(2000)]
    tok = train_tokenizer(texts, vocab_size=400)
    assert tok.get_vocab_size() <= 400
    assert tok.token_to_id(SPECIAL_TOKENS[0]) == 0
    s = "word12 other3 text"
    assert tok.decode(tok.encode(s).ids) == s
