"""CPU benchmark of the model: the small embedded config, and optionally the official size.

Small part (always): random-initialised ``embedded_config()``; encode pages/s per view size and
greedy decode tokens/s at batch 1 and batch 8, with the process peak RSS after each phase.

Official part (``--official``, writes ~6.7 GB): a snapshot folder with random bf16 weights under
the official names/shapes (written one tensor at a time), then, in a fresh subprocess so its peak
RSS is its own: load time, peak RSS, encode seconds per mode, decode tokens/s.

    nice -n 10 .venv/bin/python bench/model_cpu.py [--official] [--threads 2]
Work per decode token (official): ~2 x 570M activated parameters = ~1.1 GFLOP plus attention.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from ocrstream.model.config import embedded_config, official_config
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.generation import SamplingParams, generate
from ocrstream.model.modes import Mode, num_vision_tokens, preprocess

NO_STOP = (10**9,)  # a stop id no model emits: decode exactly max_new_tokens


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_page(w: int, h: int):  # noqa: ANN201 - PIL image
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    for y in range(20, h - 20, 24):
        d.text((20, y), "The quick brown fox jumps over the lazy dog 0123456789 " * 3, fill="black")
    return img


def time_encode(
    model: DeepseekOCRForCausalLM, mode: Mode | str, w: int, h: int, reps: int
) -> tuple[float, int]:
    img = synthetic_page(w, h)
    inp = preprocess(img, mode, max_crops=model.config.max_crops)
    with torch.inference_mode():
        model.encode_images([inp])  # warm-up
        t = time.perf_counter()
        for _ in range(reps):
            emb = model.encode_images([inp]).embeds[0]
        dt = (time.perf_counter() - t) / reps
    return dt, emb.shape[0]


def time_decode(
    model: DeepseekOCRForCausalLM, n_img: int, batch: int, new_tokens: int
) -> tuple[float, float]:
    """(prefill + first token seconds, steady decode tokens/s summed over the batch)."""
    cfg = model.config
    ids = [cfg.decoder.bos_token_id] + [cfg.image_token_id] * n_img + [5, 6, 7]
    emb = torch.randn(n_img, cfg.decoder.hidden_size, dtype=model.dtype) * 0.02
    params = SamplingParams(max_new_tokens=new_tokens, ngram=(30, 90), stop_ids=NO_STOP)
    stamps: list[float] = []
    with torch.inference_mode():
        generate(model, [ids], [emb], SamplingParams(max_new_tokens=2, ngram=None, stop_ids=NO_STOP))
        t = time.perf_counter()
        generate(
            model,
            [ids] * batch,
            [emb] * batch,
            params,
            on_step=lambda s, x: stamps.append(time.perf_counter()),
        )
    first = stamps[0] - t
    steady = (len(stamps) - 1) * batch / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return first, steady


def bench_small(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows = []
    torch.manual_seed(0)
    model = DeepseekOCRForCausalLM(embedded_config(vocab_size=2048)).eval()
    rows.append(("embedded params", f"{model.num_parameters() / 1e6:.2f} M"))
    for side in (256, 512, 640):
        mode = Mode(f"v{side}", side, side, False)
        dt, n = time_encode(model, mode, 850, 1100, args.reps)
        rows.append((f"embedded encode {side}px ({n} placeholders)", f"{1 / dt:.1f} pages/s"))
    rows.append(("peak RSS after encode", f"{peak_rss_mb():.0f} MB"))
    n_img = num_vision_tokens(Mode("v512", 512, 512, False), 850, 1100)
    for batch in (1, 8):
        first, tps = time_decode(model, n_img, batch, args.decode_tokens)
        rows.append((f"embedded prefill {n_img + 4} tokens + 1st token, batch {batch}", f"{first:.2f} s"))
        rows.append((f"embedded decode batch {batch}", f"{tps:.0f} tokens/s"))
    rows.append(("peak RSS after decode", f"{peak_rss_mb():.0f} MB"))
    return rows


def write_random_official(folder: Path) -> float:
    from ocrstream.model.weights import SINGLE_FILE, build_meta_model, write_safetensors_streaming

    cfg = official_config()
    folder.mkdir(parents=True, exist_ok=True)
    cfg.to_json_file(folder / "config.json")
    meta = build_meta_model(cfg)
    specs = [(k, tuple(v.shape), torch.bfloat16) for k, v in sorted(meta.state_dict().items())]
    gen = torch.Generator().manual_seed(0)

    def make(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if len(shape) == 1 and name.endswith(".weight"):  # every 1-D .weight is a norm scale
            return torch.ones(shape, dtype=dtype)
        if name.endswith("bias"):
            return torch.zeros(shape, dtype=dtype)
        return (torch.randn(shape, generator=gen) * 0.02).to(dtype)

    t = time.perf_counter()
    write_safetensors_streaming(folder / SINGLE_FILE, specs, make)
    return time.perf_counter() - t


def official_child(folder: str, decode_tokens: int, modes: list[str]) -> None:
    """Runs in a fresh process: prints one JSON line of measurements."""
    from ocrstream.model.weights import load_snapshot

    out: dict[str, float] = {}
    t = time.perf_counter()
    model = load_snapshot(folder, dtype=torch.bfloat16)
    out["load_s"] = time.perf_counter() - t
    out["rss_after_load_mb"] = peak_rss_mb()
    for mode in modes:
        w, h = (1191, 1684)
        dt, n = time_encode(model, mode, w, h, 1)
        out[f"encode_{mode}_s"] = dt
        out[f"placeholders_{mode}"] = n
    out["prefill_s_b1"], out["decode_tokens_per_s_b1"] = time_decode(model, 273, 1, decode_tokens)
    out["prefill_s_b4"], out["decode_tokens_per_s_b4"] = time_decode(model, 273, 4, decode_tokens)
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def bench_official(args: argparse.Namespace) -> list[tuple[str, str]]:
    folder = Path(args.official_dir)
    rows = []
    if not (folder / "config.json").exists() or args.rewrite:
        rows.append(("official: write random bf16 snapshot", f"{write_random_official(folder):.1f} s"))
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(folder),
        "--decode-tokens",
        str(args.decode_tokens),
        "--threads",
        str(args.threads),
        "--modes",
        *args.modes,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"official child failed ({res.returncode}): {res.stderr[-2000:]}")
    data = json.loads(res.stdout.strip().splitlines()[-1])
    rows.append(("official: load (bf16)", f"{data['load_s']:.1f} s"))
    rows.append(("official: RSS after load", f"{data['rss_after_load_mb']:.0f} MB"))
    for mode in args.modes:
        rows.append(
            (
                f"official: encode {mode} A4 ({int(data[f'placeholders_{mode}'])} placeholders)",
                f"{data[f'encode_{mode}_s']:.2f} s/page",
            )
        )
    for b in (1, 4):
        rows.append(
            (f"official: prefill 277 tokens + 1st token, batch {b}", f"{data[f'prefill_s_b{b}']:.1f} s")
        )
        rows.append((f"official: decode batch {b}", f"{data[f'decode_tokens_per_s_b{b}']:.2f} tokens/s"))
    rows.append(("official: peak RSS", f"{data['peak_rss_mb']:.0f} MB"))
    if not args.keep:
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 1 thread is faster on a busy shared 2-core box (OpenMP waits on the other core for every op).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=32)
    ap.add_argument("--official", action="store_true", help="also bench the official size (writes ~6.7 GB)")
    ap.add_argument("--official-dir", default="/tmp/ocrstream-official-random")
    ap.add_argument("--modes", nargs="+", default=["tiny", "small", "base", "large", "gundam"])
    ap.add_argument("--rewrite", action="store_true", help="rewrite the random snapshot even if present")
    ap.add_argument("--keep", action="store_true", help="keep the random snapshot folder")
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        official_child(args.child, args.decode_tokens, args.modes)
        return
    rows = [("torch", f"{torch.__version__}, {args.threads} threads, pid {os.getpid()}")]
    if not args.skip_small:
        rows += bench_small(args)
    if args.official:
        rows += bench_official(args)
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  -----")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
