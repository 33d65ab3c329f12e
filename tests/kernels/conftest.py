"""Kernel tests: the same files run on a GPU and, without one, in Triton's CPU interpreter.

TRITON_INTERPRET must be in the environment before any ``@triton.jit`` decorator runs, so it is set
here before anything imports the kernel modules (the root conftest does the same when it finds no
GPU). The interpreter costs roughly programs x ops: tests use small shapes and large blocks.
"""

import os

if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")):  # no NVIDIA device: interpret
    os.environ.setdefault("TRITON_INTERPRET", "1")

import logging  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

logger = logging.getLogger("tests.kernels")

# Integer poison for unwritten int outputs; NaN for floats.
INT_POISON = -77_777


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def seed() -> int:
    """Fresh inputs every run; the seed is logged so a failure can be replayed."""
    value = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(value)
    logger.warning("seed=%d", value)  # shown with the captured log of a failing test
    return value


@pytest.fixture
def poison(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torch.empty/empty_like return NaN (floats) or INT_POISON (ints) for this test, so
    any element a kernel fails to write shows up instead of happening to be zero."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def _fill(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point():
            return t.fill_(float("nan"))
        if t.dtype != torch.bool:
            return t.fill_(INT_POISON)
        return t

    def empty(*args, **kwargs):  # noqa: ANN002, ANN003 - same signature as torch.empty
        return _fill(real_empty(*args, **kwargs))

    def empty_like(*args, **kwargs):  # noqa: ANN002, ANN003
        return _fill(real_empty_like(*args, **kwargs))

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch, "empty_like", empty_like)


# ---- tolerances -----------------------------------------------------------------------------------
# One unit in the last place of each dtype (relative): the kernels round each step where the
# references do, so elementwise kernels land within one rounding of the reference.
ULP = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def elementwise(dtype: torch.dtype) -> dict[str, float]:
    """RMSNorm/rotary/combine: fp32 differs only by reduction order (a few ulps of the row sum);
    bf16/fp16 by at most one output rounding when the fp32 intermediate sits near a tie."""
    if dtype == torch.float32:
        return {"atol": 1e-6, "rtol": 1e-5}
    return {"atol": 2 * ULP[dtype], "rtol": 2 * ULP[dtype]}


def gemm(dtype: torch.dtype, scale: float) -> dict[str, float]:
    """Grouped GEMMs: fp32 accumulation in another order (fp32: ~1e-6 relative at K <= 128); in
    bf16/fp16 the reference rounds gate, up, silu and their product separately while the kernel
    rounds once, so intermediate values differ by a few ulps that the down projection sums over
    (vLLM's MoE tests use 2e-2 for bf16). Absolute tolerance scaled by the output magnitude."""
    if dtype == torch.float32:
        return {"atol": 2e-5 * scale, "rtol": 1e-4}
    return {"atol": 2e-2 * scale, "rtol": 2e-2}


@pytest.fixture
def tol():
    """Tolerance helpers: ``tol.elementwise(dtype)``, ``tol.gemm(dtype, scale)``."""

    class _Tol:
        pass

    t = _Tol()
    t.elementwise = elementwise
    t.gemm = gemm
    return t
