"""Device and dtype as configuration, for the encoder, the decoder and the expert shards.

``OCRSTREAM_DEVICE`` = ``auto`` | ``cuda`` | ``cuda:<n>`` | ``cpu`` (``ocrstream.config.CommonConfig``);
``auto`` is CUDA when torch sees a GPU, else the CPU. ``OCRSTREAM_DTYPE`` empty = bf16 weights on a
GPU, fp32 on the CPU (CPU bf16 matmuls are slow, and the CPU path stays bit-comparable with the
model's tests). Encoder and decoder must resolve to the same dtype: the vision tokens' weights id
includes it, and a decoder refuses tokens from another encoder.

Also here: the Triton instance kind a device maps to, tensor exchange with the Python backend over
DLPack (no numpy copies, bf16 included), and staging of host tensors through pinned memory.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cuda", "cpu")
DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}
# Triton data types of the float tensors that cross between decoder and shards.
TRITON_FLOAT = {torch.float32: "TYPE_FP32", torch.bfloat16: "TYPE_BF16", torch.float16: "TYPE_FP16"}


def check_device_spec(spec: str) -> str:
    """The normalised spec, or ValueError naming the accepted values."""
    s = (spec or "auto").strip().lower()
    base, _, index = s.partition(":")
    if base not in DEVICE_CHOICES or (index and (base != "cuda" or not index.isdigit())):
        raise ValueError(f"device {spec!r} is not one of auto, cuda, cuda:<n>, cpu")
    return s


def resolve_device(spec: str, cuda_available: bool | None = None) -> torch.device:
    """``auto`` -> cuda when a GPU is visible, else cpu; ``cuda`` without one is an error."""
    s = check_device_spec(spec)
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if s == "auto":
        return torch.device("cuda" if has_cuda else "cpu")
    if s.startswith("cuda") and not has_cuda:
        raise ValueError(
            f"device {spec!r} asked for but torch sees no CUDA GPU (torch {torch.__version__}); "
            "set OCRSTREAM_DEVICE=cpu or auto, or install a CUDA build of torch"
        )
    return torch.device(s)


def resolve_dtype(spec: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Explicit dtype wins; else bf16 on a GPU and fp32 on the CPU."""
    if isinstance(spec, torch.dtype):
        return spec
    if spec:
        name = spec.strip().lower().removeprefix("torch.")
        if name not in DTYPES:
            raise ValueError(f"dtype {spec!r} is not one of {sorted(DTYPES)}")
        return DTYPES[name]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def instance_kind(device: str) -> str:
    """Triton ``instance_group.kind`` for a device spec: KIND_GPU for cuda, else KIND_CPU."""
    return "KIND_GPU" if check_device_spec(device).startswith("cuda") else "KIND_CPU"


def instance_device(args: dict[str, Any]) -> torch.device:
    """The device a Python-backend model instance was given (``initialize`` args): cuda:<id> for a
    KIND_GPU instance, else the CPU."""
    if str(args.get("model_instance_kind", "CPU")).upper() == "GPU":
        index = int(args.get("model_instance_device_id", 0) or 0)
        if not torch.cuda.is_available():
            raise ValueError(f"KIND_GPU instance on device {index} but torch sees no CUDA GPU")
        return torch.device("cuda", index)
    return torch.device("cpu")


# ---- tensors across the Python backend ----------------------------------------------------------
def to_pb(pb_utils: Any, name: str, t: torch.Tensor) -> Any:
    """A ``pb_utils.Tensor`` sharing ``t``'s memory over DLPack (CPU or GPU, any dtype incl. bf16)."""
    t = t.detach().contiguous()  # the backend takes C-order tensors only
    if t.is_cuda:
        # The server reads the buffer from another stream: the producing kernels must have run.
        torch.cuda.current_stream(t.device).synchronize()
    return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(t))


def from_pb(tensor: Any) -> torch.Tensor:
    """A torch tensor viewing a ``pb_utils.Tensor`` (no copy; BYTES tensors are not DLPack-able)."""
    return torch.utils.dlpack.from_dlpack(tensor.to_dlpack())


def preferred_memory(pb_utils: Any, device: torch.device) -> dict[str, Any]:
    """BLS keyword asking for outputs on this GPU (empty on the CPU or an older backend)."""
    kind = getattr(pb_utils, "PreferredMemory", None)
    if device.type != "cuda" or kind is None:
        return {}
    return {"preferred_memory": kind(pb_utils.TRITONSERVER_MEMORY_GPU, device.index or 0)}


def stage_to_device(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host tensor on ``device`` in ``dtype``; on CUDA the bytes go through pinned memory (the
    dtype cast happens in that one host copy) and the upload is asynchronous."""
    dtype = dtype or t.dtype
    if device.type != "cuda":
        return t.to(dtype=dtype)
    if t.is_cuda:
        return t.to(device=device, dtype=dtype)
    pinned = torch.empty(t.shape, dtype=dtype, pin_memory=True)
    pinned.copy_(t)
    return pinned.to(device, non_blocking=True)
