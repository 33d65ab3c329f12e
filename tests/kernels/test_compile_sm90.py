"""Every kernel, as its launcher calls it, compiles for the H200 (sm_90) with the real Triton backend.

The CPU interpreter does not exercise Triton's compiler front end (constexpr rules, types of
loop-carried values, dot shapes), so this test compiles each launch to a cubin without a GPU:
the launchers run with their kernels swapped for recorders (CPU tensors, nothing executes), and
each recorded call becomes ``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))``
with the launch's num_warps/num_stages. Run in a subprocess because the kernels must be decorated
with TRITON_INTERPRET unset. Usage by hand: ``python tests/kernels/test_compile_sm90.py``.
"""

import os
import subprocess
import sys
from pathlib import Path


def test_all_kernels_compile_for_sm90():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())], capture_output=True, text=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    compiled = [line for line in proc.stdout.splitlines() if line.startswith("compiled ")]
    # every kernel at least once, bf16 and fp32 variants of the GEMMs
    names = {line.split()[1] for line in compiled}
    assert names == {
        "rmsnorm_kernel",
        "rotary_kernel",
        "moe_routing_kernel",
        "moe_histogram_kernel",
        "moe_align_kernel",
        "moe_scatter_kernel",
        "moe_combine_kernel",
        "moe_gate_up_kernel",
        "moe_down_kernel",
        "window_attention_kernel",
    }, proc.stdout


def _main() -> int:
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET"
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from ocrstream.kernels import moe_experts, moe_permute, moe_routing, rmsnorm, rotary, window_attention

    target = GPUTarget("cuda", 90, 32)
    dtypes = {
        torch.bfloat16: "bf16",
        torch.float16: "fp16",
        torch.float32: "fp32",
        torch.int32: "i32",
        torch.int64: "i64",
    }
    seen = set()
    failures = []

    def compile_call(kernel, args, kwargs):
        opts = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        values = dict(zip(kernel.arg_names, args, strict=False)) | kwargs
        signature, constexprs = {}, {}
        for p in kernel.params:
            v = values[p.name]
            if p.is_constexpr:
                signature[p.name] = "constexpr"
                constexprs[p.name] = v
            elif isinstance(v, torch.Tensor):
                signature[p.name] = "*" + dtypes[v.dtype]
            elif isinstance(v, bool):
                signature[p.name] = "i1"
            elif isinstance(v, int):
                signature[p.name] = "i32" if -(2**31) <= v < 2**31 else "i64"
            elif isinstance(v, float):
                signature[p.name] = "fp32"
            else:
                raise TypeError(f"{kernel.__name__}.{p.name}: cannot type {v!r}")
        key = (
            kernel.__name__,
            tuple(sorted(signature.items())),
            tuple(sorted(map(str, constexprs.items()))),
            tuple(opts.items()),
        )
        if key in seen:
            return
        seen.add(key)
        try:
            compiled = triton.compile(ASTSource(kernel, signature, constexprs), target=target, options=opts)
            print(
                f"compiled {kernel.__name__} {constexprs} {opts} shared={compiled.metadata.shared}",
                flush=True,
            )
        except Exception as exc:  # collect all failures, report once
            failures.append(f"{kernel.__name__} {constexprs}: {type(exc).__name__}: {exc}")
            print(f"FAILED {kernel.__name__} {constexprs}: {exc}", flush=True)

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: compile_call(self.kernel, args, dict(kwargs))

    modules = [rmsnorm, rotary, moe_routing, moe_permute, moe_experts, window_attention]
    for mod in modules:
        mod.check_launchable = lambda *t: None  # CPU tensors stand in for CUDA ones; nothing launches
        for name in dir(mod):
            obj = getattr(mod, name)
            if isinstance(obj, triton.runtime.jit.JITFunction) and name.endswith("_kernel"):
                setattr(mod, name, Recorder(obj))

    # bf16 for every kernel; fp32 where it changes the code (round_to's cast branch, IEEE dots).
    # fp16 takes the bf16 paths with another element type and is left to the GPU run.
    x = torch.randn(37, 1280).to(torch.bfloat16)
    rmsnorm.rmsnorm_triton(x, torch.ones(1280, dtype=torch.bfloat16), 1e-6, residual=x)
    rmsnorm.rmsnorm_triton(x.float(), torch.ones(1280), 1e-6)
    q = torch.randn(1, 9, 10, 128).to(torch.bfloat16).transpose(1, 2)
    cos = torch.randn(1, 1, 9, 128).to(torch.bfloat16)
    rotary.rotary_triton(q, q, cos, cos)
    qa = torch.randn(2, 12, 196, 64).to(torch.bfloat16)
    rel = torch.randn(2, 12, 196, 14).to(torch.bfloat16)
    window_attention.window_attention_triton(qa, qa, qa, rel, rel)
    window_attention.window_attention_triton(qa.float(), qa.float(), qa.float(), None, None)
    moe_routing.moe_routing_triton(torch.randn(37, 64), 6, norm_topk_prob=True)
    moe_routing.moe_routing_triton(torch.randn(37, 64), 1, scoring_func="sigmoid")
    E, inter, H = 64, 896, 1280
    for dt, M, k in ((torch.bfloat16, 1, 6), (torch.bfloat16, 300, 6), (torch.float32, 37, 1)):
        w_gate = torch.randn(E, inter, H).to(dt)
        w_down = torch.randn(E, H, inter).to(dt)
        ids = torch.randint(0, E, (M, k), dtype=torch.int32)
        cfg = moe_experts.default_config(M, E, k)  # decode-size and prefill-size block shapes
        moe_experts.moe_experts_triton(
            torch.randn(M, H).to(dt), w_gate, w_gate, w_down, ids, torch.rand(M, k), config=cfg
        )

    print(f"{len(seen)} compilations, {len(failures)} failures")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(_main())
