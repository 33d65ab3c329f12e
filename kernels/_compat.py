"""Optional import of the Triton language.

The kernel modules keep the ``@triton.jit`` kernel, its launcher and the PyTorch reference in one
file (style guide §2). Machines without triton (CPU-only images, the ingest/rasterizer roles) must
still import those files to reach the references, so this module hands out either the real
``triton``/``triton.language`` or stand-ins that let the decorators and ``tl.constexpr``
annotations evaluate and fail only when a kernel is actually launched.
"""

from __future__ import annotations

import os
from typing import Any

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
    _IMPORT_ERROR: ImportError | None = None
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    HAS_TRITON = False
    _IMPORT_ERROR = exc

    class _Unlaunchable:
        """What ``@triton.jit`` returns without triton: importable, not launchable."""

        def __init__(self, fn: Any) -> None:
            self.fn = fn
            self.__name__ = getattr(fn, "__name__", "kernel")

        def __getitem__(self, grid: Any) -> Any:
            raise ImportError(f"triton is not installed; cannot launch {self.__name__}") from _IMPORT_ERROR

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            raise ImportError(f"triton is not installed; cannot call {self.__name__}") from _IMPORT_ERROR

    class _MissingTriton:
        def jit(self, fn: Any = None, **kwargs: Any) -> Any:
            if fn is None:
                return _Unlaunchable
            return _Unlaunchable(fn)

        def __getattr__(self, name: str) -> Any:
            raise ImportError(f"triton is not installed (triton.{name})") from _IMPORT_ERROR

    class _MissingLanguage:
        # Annotations such as `BLOCK_SIZE_M: tl.constexpr` are evaluated at def time.
        constexpr = object()

        def __getattr__(self, name: str) -> Any:
            raise ImportError(f"triton is not installed (triton.language.{name})") from _IMPORT_ERROR

    triton = _MissingTriton()  # type: ignore[assignment]
    tl = _MissingLanguage()  # type: ignore[assignment]


def interpreting() -> bool:
    """True when kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# The kernel modules import this module just before their @triton.jit decorators run, and the
# decorator fixes interpreted vs compiled then: a later change of the variable has no effect.
_INTERPRET_AT_IMPORT = interpreting()


def check_launchable(*tensors: Any) -> None:
    """Raise a clear error before a launch that could only fail deep inside triton."""
    if not HAS_TRITON:
        raise ImportError("triton is not installed; use OCRSTREAM_KERNELS=torch") from _IMPORT_ERROR
    devices = {t.device.type for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(devices)}")
    dev = devices.pop()
    if dev == "cpu" and not (interpreting() and _INTERPRET_AT_IMPORT):
        raise RuntimeError(
            "triton kernels on CPU tensors need TRITON_INTERPRET=1 set before ocrstream.kernels "
            "modules are imported (the @triton.jit decorator reads it); got "
            f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')!r}"
        )
    if dev not in ("cpu", "cuda"):
        raise ValueError(f"triton kernels need CUDA tensors (or CPU under the interpreter), got {dev}")


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@triton.jit
def round_to(x, dtype: tl.constexpr):
    """fp32 ``x`` rounded to ``dtype`` (nearest-even), as torch rounds.

    bf16 is rounded with integer ops: the Triton 3.9 CPU interpreter truncates fp32->bf16 casts
    (and its "rtne" mode does not carry into the exponent); on GPU this is the same RNE the
    hardware cast does, for a few integer instructions in memory-bound epilogues.
    """
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)
