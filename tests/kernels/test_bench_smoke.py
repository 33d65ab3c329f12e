"""bench/kernels.py logic on CPU (interpreter, tiny sizes): the GPU run must not be its first run."""

import importlib.util
import math
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kernels.py"

TINY = {
    "H": 64, "E": 8, "I": 32, "K": 2, "HEADS": 2, "HD": 32,
    "M_quick": (1, 20), "M_moe_quick": (1, 20), "T_quick": (1, 9),
    "attn": ((4, 7, 32),), "copy_elems": 1 << 16, "matmul": 64,
}  # fmt: skip


def test_bench_rows_on_cpu(seed):
    spec = importlib.util.spec_from_file_location("bench_kernels", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ceil = bench.measure_ceilings(True, TINY, "cpu")
    assert ceil["copy_GBps"] > 0 and ceil["matmul_bf16_TFLOPs"] > 0
    rows = bench.bench_all(True, ceil, TINY, "cpu")
    kernels = [r["kernel"] for r in rows]
    assert (
        kernels.count("moe_experts") == 2 and "window_attention" in kernels and "rmsnorm+residual" in kernels
    )
    for r in rows:
        assert r["triton"]["ms"] > 0 and r["torch"]["ms"] > 0
        assert math.isclose(r["speedup"], r["torch"]["ms"] / r["triton"]["ms"])
        assert ("GBps" in r) or ("TFLOPs" in r)
    table = bench._table(rows, ceil)
    assert table.count("\n| ") == len(rows) + 1  # header + one line per row


def test_tuner_writes_a_file_the_loader_reads(tmp_path, monkeypatch, seed):
    spec = importlib.util.spec_from_file_location("bench_kernels_tune", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from ocrstream.kernels import moe_experts

    grid = [
        {
            "BLOCK_SIZE_M": bm,
            "BLOCK_SIZE_N": 32,
            "BLOCK_SIZE_K": 64,
            "GROUP_SIZE_M": 1,
            "num_warps": 4,
            "num_stages": 2,
        }
        for bm in (16, 32)
    ]
    path = bench.tune_moe(tmp_path, True, TINY, "cpu", grid=grid, token_counts=(1, 20))
    assert path.name == "E=8,N=32,device_name=cpu.json"
    monkeypatch.setattr(moe_experts, "CONFIG_DIR", path.parent)
    moe_experts.load_configs.cache_clear()
    try:
        configs = moe_experts.load_configs(8, 32, "cpu", torch.bfloat16)
    finally:
        moe_experts.load_configs.cache_clear()
    assert set(configs) == {1, 20}
    assert configs[1]["BLOCK_SIZE_M"] == 16  # 32-row blocks exceed what 1 token x k=2 can fill
    assert configs[20] in grid
