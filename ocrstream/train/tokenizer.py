"""Project BPE tokenizer (``tokenizers``), saved as tokenizer.json.

Byte-level BPE so any text round-trips exactly; the special tokens carry the official DeepSeek-OCR
names (section 10 of docs/reference) at the first ids, so bos=0, eos=1, pad=2 as in the official
decoder config and ``<image>`` has a fixed id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

log = logging.getLogger(__name__)

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
IMAGE = "<image>"
SPECIAL_TOKENS = (
    BOS,
    EOS,
    PAD,
    IMAGE,
    "<|ref|>",
    "<|/ref|>",
    "<|det|>",
    "<|/det|>",
    "<|grounding|>",
    "<td>",
    "</td>",
    "<tr>",
    "</tr>",
    "<|User|>",
    "<|Assistant|>",
)
DEFAULT_VOCAB = 1024


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, name in enumerate(SPECIAL_TOKENS):
        got = tok.token_to_id(name)
        if got != i:
            raise RuntimeError(f"special token {name!r} got id {got}, expected {i}")
    return tok


def special_ids(tok: Tokenizer) -> dict[str, int]:
    return {
        "bos_token_id": tok.token_to_id(BOS),
        "eos_token_id": tok.token_to_id(EOS),
        "pad_token_id": tok.token_to_id(PAD),
        "image_token_id": tok.token_to_id(IMAGE),
    }


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"tokenizer file {path} not found")
    return Tokenizer.from_file(str(path))


def build_project_tokenizer(out: Path, vocab_size: int = DEFAULT_VOCAB) -> Tokenizer:
    """Train on the train split of the corpus (plus table/markdown snippets) and save it."""
    from ocrstream.data.corpus import load_corpus

    corpus = load_corpus()
    texts = [p.text for p in corpus["train"]]
    # markdown ground truth uses headings and list markers; make sure they are cheap tokens
    texts += ["## Heading\n- item\n- item\n"] * 200
    tok = train_tokenizer(texts, vocab_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out))
    log.info("tokenizer %s: vocab %d", out, tok.get_vocab_size())
    return tok


UNK = "<unk>"


def build_char_tokenizer(charset: str | None = None) -> Tokenizer:
    """One id per character of ``charset`` (default: ``ocrstream.data.charset.CHARSET`` and a
    newline), after the special tokens at their official first ids; anything else is ``<unk>``.

    For the line reader: CTC needs one output per character, and at about one character per
    vision token the decoder reads glyph by glyph. ``tokenizer.json`` keeps the BPE model type
    (with no merges), so the runtime loads it like any other tokenizer.
    """
    from ocrstream.data.charset import CHARSET

    chars = list(dict.fromkeys((charset if charset is not None else CHARSET) + "\n"))
    vocab = {name: i for i, name in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    vocab[UNK] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.decoder = decoders.Fuse()
    return tok
