"""Kernel tests: the same files run on a GPU and, without one, in Triton's CPU interpreter.

TRITON_INTERPRET must be in the environment before any ``@triton.jit`` decorator runs, so it is set
here before anything imports the kernel modules (the root conftest does the same when it finds no
GPU). The interpreter costs roughly programs x ops: tests use small shapes and large blocks.
"""

import os

if not os.path.exists("/dev/nvidiactl"):  # no NVIDIA driver: interpret (an explicit env value wins)
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
