"""bench/kernels.py logic on CPU (interpreter, tiny sizes): the GPU run must not be its first run."""

import importlib.util
import math
from pathlib import Path

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
