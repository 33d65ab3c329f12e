"""Benchmark each Triton kernel against its PyTorch reference on a GPU; optionally tune the MoE GEMMs.

    python bench/kernels.py --out DIR [--quick] [--tune]

Every row: median time of the kernel and of the reference (``triton.testing.do_bench``, 20th/80th
percentiles kept), the speed-up, and the achieved rate against a ceiling measured on the same
device at start: bandwidth from a large device-to-device copy (bytes = 2 x size), matmul
throughput from a large bf16 ``torch.matmul`` (FLOPs = 2·M·N·K). Work formulas, per kernel:

- rmsnorm (with residual): bytes = 2·(4·M·N + N)          read x, residual, weight; write y, residual
- rotary: bytes = 2·(2·B·(Hq+Hk)·T·D) + 2·(2·T·D)         read+write q and k; read cos, sin
- moe_routing: bytes = 4·M·E + 8·M·k + 4·E                 fp32 logits in; ids, weights, counts out
- moe_experts: FLOPs = 2·M·k·3·H·I (gate, up, down GEMMs); bytes = 2·3·H·I·E_hit + 2·2·M·H
  (weights of the experts hit, x in, y out). Decode sizes are weight-bound: read GB/s is the rate.
- window_attention: FLOPs = 4·BH·L²·D (QKᵀ and PV); the reference also writes and reads the
  [BH, L, L] bias it materialises.

Results go to ``DIR/kernels.json`` and a markdown table ``DIR/kernels.md``; ``--tune`` writes
``DIR/configs/moe_experts/E=..,N=..,device_name=...json`` (copy it into ``kernels/configs/`` to use it).
Library code logs; this script prints its table because it is a command-line tool.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import torch

logger = logging.getLogger("bench.kernels")


# Official DeepSeek-OCR sizes (deepseek-ocr.md §2, §9) and the token counts benchmarked.
OFFICIAL = {
    "H": 1280, "E": 64, "I": 896, "K": 6, "HEADS": 10, "HD": 128,
    "M": (1, 256, 4096, 16384), "M_quick": (1, 4096), "M_moe": (1, 16, 256, 1024, 4096), "M_moe_quick": (1, 4096),
    "T": (1, 1024, 4096, 8192), "T_quick": (1, 4096),
    # SAM-base at 1024x1024: 25 windows of 14x14 (grid 64 padded to 70) x 12 heads; a global block.
    "attn": ((25 * 12, 14, 64), (12, 64, 64)),
    "copy_elems": (1 << 28) // 2, "matmul": 8192,
}  # fmt: skip


def _bench(fn, quick: bool) -> dict[str, float]:
    if not torch.cuda.is_available():  # CPU smoke runs (tests): wall clock, no percentiles worth keeping
        times = []
        for _ in range(2):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        med = sorted(times)[len(times) // 2]
        return {"ms": med, "ms_p20": min(times), "ms_p80": max(times)}
    from triton.testing import do_bench

    med, lo, hi = do_bench(
        fn, warmup=10 if quick else 25, rep=40 if quick else 200, quantiles=[0.5, 0.2, 0.8]
    )
    return {"ms": med, "ms_p20": lo, "ms_p80": hi}


def measure_ceilings(quick: bool, sizes: dict, device: str) -> dict[str, float]:
    n = sizes["copy_elems"]
    src = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    copy = _bench(lambda: dst.copy_(src), quick)
    gbps = 2 * n * 2 / (copy["ms"] * 1e-3) / 1e9
    s = sizes["matmul"]
    a = torch.randn(s, s, dtype=torch.bfloat16, device=device)
    b = torch.randn(s, s, dtype=torch.bfloat16, device=device)
    mm = _bench(lambda: torch.matmul(a, b), quick)
    tflops = 2 * s**3 / (mm["ms"] * 1e-3) / 1e12
    return {"copy_GBps": gbps, "matmul_bf16_TFLOPs": tflops}


def _row(
    name: str, shape: str, tri: dict, ref: dict, bytes_: float | None, flops: float | None, ceil: dict
) -> dict:
    row = {"kernel": name, "shape": shape, "triton": tri, "torch": ref, "speedup": ref["ms"] / tri["ms"]}
    if bytes_:
        row["GBps"] = bytes_ / (tri["ms"] * 1e-3) / 1e9
        row["pct_copy_bw"] = 100 * row["GBps"] / ceil["copy_GBps"]
    if flops:
        row["TFLOPs"] = flops / (tri["ms"] * 1e-3) / 1e12
        row["pct_matmul"] = 100 * row["TFLOPs"] / ceil["matmul_bf16_TFLOPs"]
    return row


def bench_all(quick: bool, ceil: dict, sizes: dict = OFFICIAL, device: str = "cuda") -> list[dict]:
    from ocrstream.kernels import moe_experts, moe_routing, rmsnorm, rotary, window_attention

    dev, bf16 = device, torch.bfloat16
    rows = []
    H, E, inter, K, HEADS, HD = (sizes[k] for k in ("H", "E", "I", "K", "HEADS", "HD"))
    q_ = "_quick" if quick else ""

    for M in sizes["M" + q_]:
        x = torch.randn(M, H, dtype=bf16, device=dev)
        r = torch.randn_like(x)
        w = torch.randn(H, dtype=bf16, device=dev)
        tri = _bench(lambda x=x, r=r, w=w: rmsnorm.rmsnorm_triton(x, w, 1e-6, r), quick)
        ref = _bench(lambda x=x, r=r, w=w: rmsnorm.rmsnorm_ref(x, w, 1e-6, r), quick)
        rows.append(_row("rmsnorm+residual", f"M={M},N={H}", tri, ref, 2 * (4 * M * H + H), None, ceil))

    for T in sizes["T" + q_]:
        q = torch.randn(1, T, HEADS, HD, dtype=bf16, device=dev).transpose(1, 2)  # the model's layout
        k = torch.randn(1, T, HEADS, HD, dtype=bf16, device=dev).transpose(1, 2)
        cos = torch.randn(1, 1, T, HD, dtype=bf16, device=dev)
        sin = torch.randn_like(cos)
        tri = _bench(lambda q=q, k=k, c=cos, s=sin: rotary.rotary_triton(q, k, c, s), quick)
        ref = _bench(lambda q=q, k=k, c=cos, s=sin: rotary.rotary_ref(q, k, c, s), quick)
        rows.append(
            _row(
                "rotary",
                f"B=1,H={HEADS},T={T},D={HD}",
                tri,
                ref,
                2 * (2 * 2 * HEADS * T * HD) + 2 * 2 * T * HD,
                None,
                ceil,
            )
        )

    for M in sizes["M" + q_]:
        logits = torch.randn(M, E, device=dev)
        tri = _bench(lambda lg=logits: moe_routing.moe_routing_triton(lg, K), quick)
        ref = _bench(lambda lg=logits: moe_routing.moe_routing_ref(lg, K), quick)
        rows.append(
            _row("moe_routing", f"M={M},E={E},k={K}", tri, ref, 4 * M * E + 8 * M * K + 4 * E, None, ceil)
        )

    w_gate = torch.randn(E, inter, H, dtype=bf16, device=dev) / H**0.5
    w_up = torch.randn(E, inter, H, dtype=bf16, device=dev) / H**0.5
    w_down = torch.randn(E, H, inter, dtype=bf16, device=dev) / inter**0.5
    for M in sizes["M_moe" + q_]:
        x = torch.randn(M, H, dtype=bf16, device=dev)
        tw, ti, tc = moe_routing.moe_routing_triton(torch.randn(M, E, device=dev), K)
        hit = int((tc > 0).sum())
        tri = _bench(
            lambda x=x, ti=ti, tw=tw, tc=tc: moe_experts.moe_experts_triton(
                x, w_gate, w_up, w_down, ti, tw, tc
            ),
            quick,
        )
        ref = _bench(
            lambda x=x, ti=ti, tw=tw: moe_experts.moe_experts_ref(x, w_gate, w_up, w_down, ti, tw), quick
        )
        flops = 2 * M * K * 3 * H * inter
        bytes_ = 2 * 3 * H * inter * hit + 2 * 2 * M * H
        rows.append(_row("moe_experts", f"M={M},E={E},N={inter},H={H},k={K}", tri, ref, bytes_, flops, ceil))

    for bh, kh, D in sizes["attn"]:
        L = kh * kh
        q, k, v = (torch.randn(1, bh, L, D, dtype=bf16, device=dev) for _ in range(3))
        rh = torch.randn(1, bh, L, kh, dtype=bf16, device=dev)
        rw = torch.randn_like(rh)
        tri = _bench(
            lambda q=q, k=k, v=v, rh=rh, rw=rw: window_attention.window_attention_triton(q, k, v, rh, rw),
            quick,
        )
        ref = _bench(
            lambda q=q, k=k, v=v, rh=rh, rw=rw: window_attention.window_attention_ref(q, k, v, rh, rw), quick
        )
        rows.append(
            _row("window_attention", f"BH={bh},L={L},D={D}", tri, ref, None, 4 * bh * L * L * D, ceil)
        )
    return rows


def tune_moe(
    out_dir: Path,
    quick: bool,
    sizes: dict = OFFICIAL,
    device: str = "cuda",
    grid: list[dict] | None = None,
    token_counts: tuple[int, ...] | None = None,
) -> Path:
    """Time a grid of block configs per token count for the official expert shape; save the best."""
    from ocrstream.kernels import moe_experts, moe_routing

    dev, bf16 = device, torch.bfloat16
    H, E, inter, K = (sizes[k] for k in ("H", "E", "I", "K"))
    device_name = torch.cuda.get_device_name() if dev == "cuda" else dev
    w_gate = torch.randn(E, inter, H, dtype=bf16, device=dev) / H**0.5
    w_up = torch.randn(E, inter, H, dtype=bf16, device=dev) / H**0.5
    w_down = torch.randn(E, H, inter, dtype=bf16, device=dev) / inter**0.5
    grid = grid or [
        {
            "BLOCK_SIZE_M": bm,
            "BLOCK_SIZE_N": bn,
            "BLOCK_SIZE_K": bk,
            "GROUP_SIZE_M": gm,
            "num_warps": nw,
            "num_stages": ns,
        }
        for bm, bn, bk, gm, nw, ns in itertools.product(
            (16, 64) if quick else (16, 32, 64, 128),
            (64, 128),
            (64, 128),
            (1, 8),
            (4, 8),
            (3,) if quick else (3, 4),
        )
    ]
    best: dict[str, dict] = {"_tuned_with": {"script": "bench/kernels.py --tune", "device": device_name}}
    name = moe_experts.config_file_name(E, inter, device_name, bf16)
    path = out_dir / "configs" / "moe_experts" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    for M in token_counts or ((1, 64, 1024) if quick else (1, 16, 64, 256, 1024, 4096)):
        x = torch.randn(M, H, dtype=bf16, device=dev)
        tw, ti, tc = moe_routing.moe_routing_triton(torch.randn(M, E, device=dev), K)
        timings = []
        for cfg in grid:
            if cfg["BLOCK_SIZE_M"] > max(16, 2 * M * K):
                continue  # blocks far larger than the rows an expert can get only waste work
            try:
                t = _bench(
                    lambda c=cfg, x=x, ti=ti, tw=tw, tc=tc: moe_experts.moe_experts_triton(
                        x, w_gate, w_up, w_down, ti, tw, tc, config=c
                    ),
                    True,
                )
            except Exception as exc:  # a config can exceed shared memory on this device: skip it, logged
                logger.warning("config %s failed at M=%d: %s", cfg, M, exc)
                continue
            timings.append((t["ms"], cfg))
        ms, cfg = min(timings, key=lambda p: p[0])
        best[str(M)] = cfg
        print(f"tune M={M}: best {ms:.4f} ms {cfg} ({len(timings)} configs)", flush=True)
        path.write_text(json.dumps(best, indent=2) + "\n")  # after every M: a timeout keeps what is done
    return path


def _table(rows: list[dict], ceil: dict) -> str:
    lines = [
        f"Ceilings: copy {ceil['copy_GBps']:.0f} GB/s, bf16 matmul {ceil['matmul_bf16_TFLOPs']:.0f} TFLOP/s",
        "",
        "| kernel | shape | triton ms | torch ms | speed-up | GB/s (% copy) | TFLOP/s (% matmul) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        gb = f"{r['GBps']:.0f} ({r['pct_copy_bw']:.0f}%)" if "GBps" in r else ""
        tf = f"{r['TFLOPs']:.1f} ({r['pct_matmul']:.0f}%)" if "TFLOPs" in r else ""
        lines.append(
            f"| {r['kernel']} | {r['shape']} | {r['triton']['ms']:.4f} | {r['torch']['ms']:.4f} | "
            f"{r['speedup']:.2f}x | {gb} | {tf} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    ap.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    ap.add_argument("--tune", action="store_true", help="also tune the MoE expert GEMM block sizes")
    ap.add_argument("--tune-only", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not torch.cuda.is_available():
        print("bench/kernels.py needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    import triton

    result["triton"] = triton.__version__
    if not args.tune_only:
        ceil = measure_ceilings(args.quick, OFFICIAL, "cuda")
        result["ceilings"] = ceil
        rows = bench_all(args.quick, ceil)
        result["rows"] = rows
        table = _table(rows, ceil)
        (args.out / "kernels.md").write_text(f"# Kernel benchmarks on {result['device']}\n\n{table}")
        print(table, flush=True)
    if args.tune or args.tune_only:
        result["tuned_config"] = str(tune_moe(args.out, args.quick))
    result["seconds"] = time.time() - t0
    (args.out / ("tune.json" if args.tune_only else "kernels.json")).write_text(
        json.dumps(result, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
