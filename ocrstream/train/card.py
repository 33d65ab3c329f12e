"""MODEL_CARD.md for the shipped embedded model, written from eval.json and the run's metrics."""

from __future__ import annotations

import json
from pathlib import Path


def _pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def training_summary(metrics_path: Path) -> dict:
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return {}
    last = rows[-1]
    recent = [r["lines_per_s"] for r in rows[-200:]]
    return {
        "steps": last["step"],
        "lines": last["lines"],
        "cpu_h": last["cpu_h"],
        "wall_h": last["wall_h"],
        "lines_per_s_recent": sum(recent) / len(recent),
        "lines_per_cpu_s": last["lines"] / max(1e-9, last["cpu_h"] * 3600),
        "curve": [
            {k: r[k] for k in r if k == "step" or k == "cpu_h" or "cer" in k}
            for r in rows
            if any("cer" in k for k in r)
        ],
    }


def write_card(model_dir: Path, metrics_path: Path | None, extra_notes: str = "") -> Path:
    ev = json.loads((model_dir / "eval.json").read_text())
    prov = ev["provenance"]
    cfg = json.loads((model_dir / "config.json").read_text())
    ours = cfg["vision_config"].get("ocrstream", {})
    tr = training_summary(metrics_path) if metrics_path and metrics_path.exists() else {}
    sp = ev["splits"]
    tc = prov.get("train_config", {})
    rows = [
        ("held-out text lines, training faces", sp["lines"]),
        ("held-out text lines, unseen face (Noto Serif)", sp["font"]),
        *([("random-character lines, training faces", sp["lines_random"])] if "lines_random" in sp else []),
        ("held-out synthetic pages (page -> lines)", sp["pages"]),
        ("held-out synthetic pages, unseen face", sp["pages_font"]),
        ("bundled sample PDFs (the README command)", sp["samples"]),
    ]
    lines = [
        "# ocrstream embedded model",
        "",
        "A DeepSeek-OCR-shaped line reader (`ocrstream/model`): SAM-style windowed ViT with a conv stem ->",
        "a convolutional compressor that strides over rows only -> CLIP-style ViT over the line ->",
        "linear projector -> DeepSeek-V2 MoE decoder, plus a CTC head on the vision tokens. Trained from",
        "scratch by this repo on synthetic text lines on a shared 2-core CPU. See `docs/training.md`.",
        "",
        "## Geometry",
        "",
        "- A view is one text line: the page's lines are found from its ink (columns, line bands), each cut",
        "  with its column's typical band, padded and scaled to a 32-px strip (`ocrstream/model/lines.py`).",
        "- One vision token is 32 x 8 px of strip: about "
        f"{sp['lines']['chars_per_vision_token']:.2f} characters per vision token on held-out lines",
        "  (the tokenizer is character-level, so this is also text tokens per vision token).",
        f"- Decoding: `{ours.get('top', {}).get('line_decoding', 'guided')}` (greedy CTC, the decoder alone,"
        " or the decoder guided by CTC prefix scores).",
        f"- Parameters: {prov.get('n_params', 0):,}; weights {prov.get('weights_bytes', 0) / 1e6:.1f} MB"
        " (fp16 safetensors, run in fp32).",
        "",
        "## Measured (eval.json)",
        "",
        "| split | CER | items | chars / vision token |",
        "|---|---|---|---|",
    ]
    for name, s in rows:
        cpt = s.get("chars_per_vision_token")
        lines.append(f"| {name} | {_pct(s['cer'])} | {s['n']} | {'' if cpt is None else f'{cpt:.2f}'} |")
    if "seconds_per_page" in sp["pages"]:
        lines += [
            "",
            f"Whole synthetic page (A4, 144 dpi): {sp['pages']['seconds_per_page']:.2f} s on this machine.",
        ]
    lines += [
        "",
        "## Training",
        "",
        f"- {prov.get('step', 0):,} steps, {prov.get('lines_seen', 0):,} lines, "
        f"{prov.get('cpu_hours', 0):.2f} CPU h ({prov.get('wall_hours', 0):.2f} h wall), seed {tc.get('seed')}.",
        f"- Batch {tc.get('batch')}, AdamW, LR {tc.get('lr')} (warm-up {tc.get('warmup')}, cosine to"
        f" {tc.get('lr_floor')}x), CTC on every line, the decoder's loss on {tc.get('ar_share')} of each batch,",
        f"  {tc.get('corrupt_rate')} of decoder inputs replaced by random characters.",
        f"- Data: {len(prov.get('fonts_train', []))} training faces (held out: {prov.get('font_heldout')}),"
        f" {int(100 * tc.get('random_share', 0.5))}% random-character lines, the rest corpus text",
        "  (Python docstrings and licence texts, split by source); degradations: grey levels, blur,",
        "  noise, JPEG, low resolution, neighbouring lines, scale jitter; squeezed rungs for the curve.",
    ]
    if tr:
        lines += [f"- Throughput: {tr['lines_per_cpu_s']:.1f} lines per CPU-second overall."]
    if extra_notes:
        lines += ["", extra_notes]
    path = model_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path
