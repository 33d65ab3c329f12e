"""Evaluation of the embedded model: CER / word accuracy per split, compression table, image gap.

Splits (held-out text only, never trained or tuned on):
* ``test``  - test-split text rendered in the training fonts,
* ``font``  - test-split text rendered in a font never used in training (Noto Serif),
* ``short`` - test-split text, a few words per view (curriculum level 1), training fonts.

CER = Levenshtein distance / reference length after collapsing all whitespace to single spaces
(rendered line breaks count as spaces). Precision (Fox-table style) = max(0, 1 - CER) per page.
Compression = text tokens (project tokenizer) / vision tokens (encoder outputs, no newline or
separator slots), as in the paper.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ocrstream.textdist import levenshtein

log = logging.getLogger(__name__)

# Paper Table 2 buckets text tokens per page at 64/100 vision tokens; ours are the same idea at
# 16 vision tokens per view, bucketed by compression ratio.
COMPRESSION_BUCKETS = ((0.0, 2.0), (2.0, 2.5), (2.5, 3.0), (3.0, 3.5), (3.5, 4.0), (4.0, 5.0), (5.0, 99.0))


def normalize(text: str) -> str:
    return " ".join(text.split())


def cer(ref: str, hyp: str) -> float:
    """Character error rate of ``hyp`` against ``ref`` with whitespace collapsed; 0 for two empties."""
    r, h = normalize(ref), normalize(hyp)
    if not r:
        return 0.0 if not h else 1.0
    return levenshtein(r, h) / len(r)


def word_accuracy(ref: str, hyp: str) -> float:
    """1 - word error rate, clipped at 0."""
    r, h = ref.split(), hyp.split()
    if not r:
        return 1.0 if not h else 0.0
    return max(0.0, 1.0 - levenshtein(r, h) / len(r))


@dataclass
class PageResult:
    split: str
    ref: str
    hyp: str
    cer: float
    word_acc: float
    text_tokens: int
    vision_tokens: int
    stopped: bool

    @property
    def compression(self) -> float:
        return self.text_tokens / self.vision_tokens


def eval_pages(split: str, n: int, size: int, seed: int = 7):
    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.fonts import heldout_fonts, train_fonts
    from ocrstream.data.render import PageGenerator

    corpus = load_corpus()
    fonts = heldout_fonts() if split == "font" else train_fonts()
    level = 1 if split == "short" else 3
    gen = PageGenerator(corpus["test"], fonts, size, split=f"eval-{split}", seed=seed)
    return [gen.page(i, level) for i in range(n)]


@torch.no_grad()
def read_pages(
    model, tok, pages, size: int, max_new_tokens: int = 160, batch: int = 16
) -> list[tuple[str, bool, list[int]]]:
    """Greedy free-OCR decode of rendered views with the model's own generation code."""
    from ocrstream.model.generation import SamplingParams, generate
    from ocrstream.train.batches import pixels_from_pages, prompt_ids
    from ocrstream.train.recipe import n_placeholders
    from ocrstream.train.tokenizer import special_ids

    sp = special_ids(tok)
    prefix = prompt_ids(tok, n_placeholders(size), sp["bos_token_id"], sp["image_token_id"])
    out = []
    model.eval()
    for i in range(0, len(pages), batch):
        chunk = pages[i : i + batch]
        feats = model.encode_pixels(pixels_from_pages(chunk))
        embeds = [model.layout(feats.projected[j], None, (1, 1)) for j in range(len(chunk))]
        res = generate(
            model,
            [prefix] * len(chunk),
            image_embeds=[[e] for e in embeds],
            params=SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0),
        )
        for seq, stopped in zip(res.sequences, res.stopped, strict=True):
            out.append((tok.decode(seq), stopped, seq))
    return out


def gap_on_pages(model, tok, pages, size: int) -> dict[str, float]:
    from ocrstream.train.batches import make_batch
    from ocrstream.train.objective import Trainee, image_gap
    from ocrstream.train.recipe import n_placeholders
    from ocrstream.train.tokenizer import special_ids

    tr = Trainee(model)
    batch = make_batch(pages, tok, n_placeholders(size), special_ids(tok))
    return image_gap(tr, batch)


def compression_table(results: Sequence[PageResult]) -> list[dict]:
    rows = []
    for lo, hi in COMPRESSION_BUCKETS:
        sel = [r for r in results if lo <= r.compression < hi]
        if not sel:
            continue
        rows.append(
            {
                "compression": f"{lo:g}-{hi:g}" if hi < 99 else f">={lo:g}",
                "pages": len(sel),
                "text_tokens_mean": sum(r.text_tokens for r in sel) / len(sel),
                "vision_tokens": sel[0].vision_tokens,
                "compression_mean": sum(r.compression for r in sel) / len(sel),
                "precision": sum(max(0.0, 1 - r.cer) for r in sel) / len(sel),
                "cer": _corpus_cer(sel),
            }
        )
    return rows


def _corpus_cer(results: Sequence[PageResult]) -> float:
    num = sum(levenshtein(normalize(r.ref), normalize(r.hyp)) for r in results)
    den = sum(len(normalize(r.ref)) for r in results)
    return num / max(1, den)


def summarize(results: Sequence[PageResult]) -> dict:
    return {
        "pages": len(results),
        "cer": _corpus_cer(results),
        "cer_mean_page": sum(r.cer for r in results) / max(1, len(results)),
        "word_acc": sum(r.word_acc for r in results) / max(1, len(results)),
        "compression_mean": sum(r.compression for r in results) / max(1, len(results)),
        "stopped_frac": sum(r.stopped for r in results) / max(1, len(results)),
    }


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else ""


def evaluate_model(
    model,
    tok,
    *,
    n_pages: int = 48,
    size: int | None = None,
    splits=("test", "font", "short"),
    examples: int = 3,
) -> dict:
    from ocrstream.train.recipe import TILE, n_vision_tokens

    size = size or TILE
    nv = n_vision_tokens(size)
    out: dict = {"splits": {}, "examples": {}}
    all_results: list[PageResult] = []
    for split in splits:
        pages = eval_pages(split, n_pages, size)
        decoded = read_pages(model, tok, pages, size)
        res = [
            PageResult(
                split,
                p.text,
                hyp,
                cer(p.text, hyp),
                word_accuracy(normalize(p.text), normalize(hyp)),
                len(tok.encode(p.text).ids),
                nv,
                stopped,
            )
            for p, (hyp, stopped, _) in zip(pages, decoded, strict=True)
        ]
        s = summarize(res)
        s["gap"] = gap_on_pages(model, tok, pages[:16], size)
        out["splits"][split] = s
        out["examples"][split] = [{"ref": r.ref, "hyp": r.hyp, "cer": r.cer} for r in res[:examples]]
        if split != "short":
            all_results.extend(res)
        log.info("eval %s: %s", split, {k: v for k, v in s.items() if k != "gap"})
    out["compression_table"] = compression_table(all_results)
    return out


def write_eval(result: dict, path: Path, provenance: dict) -> None:
    result = {
        **result,
        "provenance": {
            **provenance,
            "git_commit": git_commit(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
