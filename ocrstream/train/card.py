"""MODEL_CARD.md for the shipped embedded model, written from eval.json and the run's metrics."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(v: float, pct: bool = False) -> str:
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


def training_summary(metrics_path: Path) -> dict:
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return {}
    gaps = [r for r in rows if any(k.endswith("gap_blank") for k in r)]
    pps = [r["pages_per_s"] for r in rows[-200:]]
    last = rows[-1]
    return {
        "steps": last["step"],
        "pages": last["pages"],
        "cpu_h": last["cpu_h"],
        "wall_h": last["wall_h"],
        "pages_per_s_recent": sum(pps) / len(pps),
        "pages_per_cpu_s": last["pages"] / max(1e-9, last["cpu_h"] * 3600),
        "last_loss": last["loss"],
        "last_ar": last["ar"],
        "last_read": last["read"],
        "gap_history": [
            {k: r[k] for k in r if k == "step" or k == "top_level" or "gap" in k or "ce_real" in k}
            for r in gaps[-8:]
        ],
    }


def _views_line(tc: dict) -> list[str]:
    sizes = tc.get("view_sizes") or ()
    if not sizes:
        return []
    px = ", ".join(str(v) for v in sizes)
    return [
        f"The last run also read {int(100 * tc.get('view_prob', 0))}% of its level 0-{tc.get('view_max_level', 2)}"
        f" batches at smaller views ({px} px: the cheaper ladder modes), the page stretched as the runtime does.",
    ]


def write_card(model_dir: Path, metrics_path: Path | None, extra_notes: str = "") -> Path:
    ev = json.loads((model_dir / "eval.json").read_text())
    prov = ev["provenance"]
    cfg = json.loads((model_dir / "config.json").read_text())
    tr = training_summary(metrics_path) if metrics_path and metrics_path.exists() else {}
    sp = ev["splits"]
    lines = [
        "# ocrstream embedded model",
        "",
        "DeepSeek-OCR architecture (`ocrstream/model`: SAM-style windowed ViT -> 16x conv compressor ->",
        "CLIP-style ViT -> linear projector -> DeepSeek-V2 MoE decoder) at small dimensions, trained from",
        "scratch by this repo on synthetic pages on a shared 2-core CPU. See `docs/training.md`.",
        "",
        "## At a glance",
        "",
        f"- Parameters: {prov.get('n_params', 0) / 1e6:.2f} M; weights {prov['weights_bytes'] / 1e6:.1f} MB (fp16 safetensors).",
        '- Input: one 256x256 view (mode `"256"`) -> 16 vision tokens (21 `<image>` placeholders);',
        '  whole pages use the default mode `"reflow-256"`: text lines re-laid into as many 256-px views',
        "  as they fill, each read alone (`ocrstream/model/reflow.py`).",
        "- Prompt: `<image>\\nFree OCR.` (free OCR; no grounding/markdown training).",
        f"- Tokenizer: byte-level BPE, vocab {cfg.get('vocab_size')}, official special-token names.",
        f"- Training: {prov['step']} steps, {prov['pages_seen']} pages, **{prov['cpu_hours']:.2f} CPU hours**"
        f" ({prov['wall_hours']:.2f} h wall), curriculum level reached {prov['top_level']} of 3.",
        "",
        "## Data",
        "",
        "Synthetic pages rendered by `ocrstream/data/render.py` from docstrings of the Python stdlib and",
        "installed packages plus `/usr/share/common-licenses`, split by a hash of the source file",
        f"(corpus sha256[:16] `{prov.get('corpus_sha256_16')}`). Training fonts: {', '.join(prov['fonts_train'])}.",
        f"Held-out font: {prov['font_heldout']}. No external PDFs or images were used for training or tuning.",
        "",
        "## Recipe",
        "",
        "Autoregressive CE + a non-autoregressive reading head (position-only queries that see only the",
        "image prefix and themselves); a per-vision-token bag-of-tokens loss; a per-patch glyph",
        "classification loss on the SAM neck (training-only head, the signal that got the encoder to",
        "tell letters apart) and its per-vision-token twin on the projected tokens; an alignment",
        "guide (one head per upper decoder layer is told which vision token shows the token being",
        "predicted); curriculum from 1-3 words in large type to full views; vision-token diversity",
        "floor; decoder LR ramp; 15% input-token corruption; LR 1e-3, then a cosine decay to 5e-5",
        "(`--anneal-steps`). Details and hyper-parameters:",
        "`docs/training.md`, `train_config` in `eval.json`.",
        *_views_line(prov.get("train_config", {})),
        "",
        "## Evaluation (held-out text; `eval.json`)",
        "",
        "| split | pages | CER | word acc | mean compression (text tok / vision tok) | gap vs blank (nats/tok) | gap vs other page |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in sp.items():
        g = s.get("gap", {})
        lines.append(
            f"| {name} | {s['pages']} | {_fmt(s['cer'], True)} | {_fmt(s['word_acc'], True)} | "
            f"{s['compression_mean']:.2f} | {g.get('gap_blank', float('nan')):.3f} | {g.get('gap_other', float('nan')):.3f} |"
        )
    lines += [
        "",
        "Splits: `test` = held-out text in training fonts (level-3 full views); `font` = the same kind of",
        "pages in the held-out font; `short` = held-out text, a few words per view (level 1).",
        "",
        "### Precision by compression (Fox-table style; test + font pages, 16 vision tokens each)",
        "",
        "| compression | pages | mean text tokens | precision (1 - CER) |",
        "|---|---|---|---|",
    ]
    for r in ev["compression_table"]:
        lines.append(
            f"| {r['compression']} | {r['pages']} | {r['text_tokens_mean']:.1f} | {_fmt(r['precision'], True)} |"
        )
    if tr:
        lines += [
            "",
            "## Training log",
            "",
            f"- Throughput: {tr['pages_per_s_recent']:.1f} pages/s recently (wall, machine shared with other",
            f"  jobs); {tr['pages_per_cpu_s']:.1f} pages per CPU-second.",
            f"- Last step: loss {tr['last_loss']:.3f} (AR {tr['last_ar']:.3f}, reading head {tr['last_read']:.3f}).",
            "- Gap history (validation batch, nats/token):",
            "",
            "```",
            *[
                json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in g.items()})
                for g in tr["gap_history"]
            ],
            "```",
        ]
    lines += ["", "## Examples (test split)", ""]
    for ex in ev["examples"].get("test", [])[:2]:
        lines += [
            "```",
            "REF: " + ex["ref"].replace("\n", " / "),
            "HYP: " + ex["hyp"].replace("\n", " / "),
            "```",
        ]
    lines += ["", "## Limits", "", extra_notes.strip() or "-", ""]
    path = model_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
