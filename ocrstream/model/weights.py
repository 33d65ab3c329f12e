"""Checkpoint I/O: Hugging Face snapshot folders of safetensors files, manifest checks.

Follows the layout of the official ``deepseek-ai/DeepSeek-OCR`` snapshot (``config.json`` plus one
``model-00001-of-000001.safetensors``, all bf16) and the Hugging Face sharded convention
(``model.safetensors.index.json`` with a ``weight_map``). Our module tree yields the checkpoint
names directly, so loading is a strict name/shape match; the manifest can be built on the meta
device (no memory) and compared with safetensors headers (no tensor data read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import DeepseekOCRConfig
from .deepseek_ocr import DeepseekOCRForCausalLM

log = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
SINGLE_FILE = "model-00001-of-000001.safetensors"  # the official file name

ST_DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in ST_DTYPES.items()}
SHORT_DTYPES = {"bf16": "BF16", "f16": "F16", "fp16": "F16", "f32": "F32", "fp32": "F32"}


class CheckpointError(ValueError):
    """A snapshot that does not match the model: carries the offending tensor names."""

    def __init__(self, message: str, report: ManifestReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name, e.g. "BF16"
    file: str = ""
    offsets: tuple[int, int] = (0, 0)

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass
class ManifestReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshapen: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=list
    )  # name, want, got
    other: list[str] = field(default_factory=list)  # file-level problems (truncated data, bad header)
    n_expected: int = 0
    n_found: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshapen or self.other)

    def lines(self) -> list[str]:
        out = [f"expected {self.n_expected} tensors, found {self.n_found}"]
        out += [f"missing: {n}" for n in self.missing]
        out += [f"unexpected: {n}" for n in self.unexpected]
        out += [f"misshapen: {n} expected {list(w)} got {list(g)}" for n, w, g in self.misshapen]
        out += [f"error: {m}" for m in self.other]
        return out


# ---- manifests ---------------------------------------------------------------------------------
def build_meta_model(cfg: DeepseekOCRConfig) -> DeepseekOCRForCausalLM:
    """The model on the meta device: shapes only, nothing allocated."""
    with torch.device("meta"):
        return DeepseekOCRForCausalLM(cfg, init=False)


def expected_manifest(cfg: DeepseekOCRConfig) -> dict[str, tuple[int, ...]]:
    """Checkpoint tensor names -> shapes for a config (persistent state only)."""
    model = build_meta_model(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def read_manifest_tsv(path: str | Path) -> dict[str, TensorInfo]:
    """Parse a `name<TAB>shape<TAB>dtype` manifest (lines starting with # are comments)."""
    out: dict[str, TensorInfo] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{lineno}: expected 3 tab-separated columns, got {line!r}")
        name, shape, dtype = parts
        out[name] = TensorInfo(
            tuple(int(s) for s in shape.split(",")), SHORT_DTYPES.get(dtype, dtype.upper())
        )
    return out


def compare_manifest(expected: dict[str, tuple[int, ...]], found: dict[str, TensorInfo]) -> ManifestReport:
    rep = ManifestReport(n_expected=len(expected), n_found=len(found))
    rep.missing = sorted(set(expected) - set(found))
    rep.unexpected = sorted(set(found) - set(expected))
    rep.misshapen = [
        (n, expected[n], found[n].shape)
        for n in sorted(set(expected) & set(found))
        if expected[n] != found[n].shape
    ]
    return rep


# ---- safetensors headers -----------------------------------------------------------------------
def read_safetensors_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    """(tensors, metadata, data start offset) from the header only; no tensor data is read."""
    path = Path(path)
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path}: too short for a safetensors header ({len(raw)} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100_000_000:
            raise CheckpointError(f"{path}: implausible safetensors header length {n}")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: bad safetensors header: {exc}") from exc
    meta = header.pop("__metadata__", {}) or {}
    tensors = {
        k: TensorInfo(tuple(v["shape"]), v["dtype"], path.name, tuple(v["data_offsets"]))
        for k, v in header.items()
    }
    return tensors, meta, 8 + n


def iter_safetensors(path: str | Path):  # noqa: ANN201 - Iterator[tuple[str, torch.Tensor]]
    """Yield (name, tensor) read with plain file reads into fresh tensors.

    Plain reads (not mmap) keep the process RSS at one copy of the weights: mapped file pages
    would count as resident too while the file is open.
    """
    path = Path(path)
    tensors, _, data_start = read_safetensors_header(path)
    with path.open("rb", buffering=0) as f:
        for name, info in sorted(tensors.items(), key=lambda kv: kv[1].offsets[0]):
            if info.dtype not in ST_DTYPES:
                raise CheckpointError(f"{path}: {name} has unsupported dtype {info.dtype}")
            t = torch.empty(info.shape, dtype=ST_DTYPES[info.dtype])
            buf = memoryview(t.view(torch.uint8).numpy()).cast("B") if t.numel() else memoryview(b"")
            if info.offsets[1] - info.offsets[0] != len(buf):
                raise CheckpointError(f"{path}: {name} spans {info.offsets} but needs {len(buf)} bytes")
            f.seek(data_start + info.offsets[0])
            got = 0
            while got < len(buf):
                n = f.readinto(buf[got:])
                if not n:
                    raise CheckpointError(f"{path}: file ends inside {name}")
                got += n
            yield name, t


def snapshot_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a snapshot: from the index when present, else all *.safetensors."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    if index.exists():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted({folder / f for f in weight_map.values()})
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"{index} names shard files that do not exist: {missing}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors files in {folder}")
    return files


def read_snapshot_headers(folder: str | Path) -> tuple[dict[str, TensorInfo], list[str]]:
    """All tensors of a snapshot from headers only, plus file-level problems found on the way."""
    found: dict[str, TensorInfo] = {}
    problems: list[str] = []
    for path in snapshot_files(folder):
        tensors, _, data_start = read_safetensors_header(path)
        size = path.stat().st_size
        for name, info in tensors.items():
            if name in found:
                problems.append(f"{name} appears in both {found[name].file} and {path.name}")
            found[name] = info
            if info.dtype not in ST_DTYPES:
                problems.append(f"{name}: unknown dtype {info.dtype}")
                continue
            nbytes = info.numel * torch.empty((), dtype=ST_DTYPES[info.dtype]).element_size()
            if info.offsets[1] - info.offsets[0] != nbytes:
                problems.append(f"{name}: data span {info.offsets} does not hold {nbytes} bytes")
            if data_start + info.offsets[1] > size:
                problems.append(f"{name}: data ends past the end of {path.name} ({size} bytes)")
    return found, problems


def verify_snapshot(folder: str | Path, cfg: DeepseekOCRConfig | None = None) -> ManifestReport:
    """Compare a snapshot's headers with the model built from its config.json (meta device)."""
    folder = Path(folder)
    if cfg is None:
        cfg = DeepseekOCRConfig.from_json_file(folder / CONFIG_NAME)
    found, problems = read_snapshot_headers(folder)
    rep = compare_manifest(expected_manifest(cfg), found)
    rep.other = problems
    return rep


# ---- load / save -------------------------------------------------------------------------------
def _resolve_dtype(dtype: torch.dtype | str | None, cfg: DeepseekOCRConfig) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    name = (dtype or cfg.torch_dtype or "float32").replace("torch.", "")
    table = {
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
        "float32": torch.float32,
        "fp32": torch.float32,
    }
    if name not in table:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(table)}")
    return table[name]


def load_snapshot(
    folder: str | Path,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    cfg: DeepseekOCRConfig | None = None,
) -> DeepseekOCRForCausalLM:
    """Load a snapshot folder strictly: every expected tensor present with its shape, nothing extra."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    if cfg is None:
        cfg = DeepseekOCRConfig.from_json_file(folder / CONFIG_NAME)
    want_dtype = _resolve_dtype(dtype, cfg)
    rep = verify_snapshot(folder, cfg)
    if not rep.ok:
        raise CheckpointError(
            f"checkpoint {folder} does not match its config:\n  " + "\n  ".join(rep.lines()), rep
        )
    model = build_meta_model(cfg)
    state: dict[str, torch.Tensor] = {}
    for path in snapshot_files(folder):
        for name, t in iter_safetensors(path):
            state[name] = t.to(device=device, dtype=want_dtype)
    model.load_state_dict(state, strict=True, assign=True)
    _materialize_buffers(model, device)
    model.eval()
    log.info("loaded %s (%d tensors, %s) from %s", cfg.name, len(state), want_dtype, folder)
    return model


def _materialize_buffers(model: DeepseekOCRForCausalLM, device: str | torch.device) -> None:
    """Non-persistent buffers are not in the checkpoint; rebuild those left on the meta device."""
    emb = model.model.vision_model.embeddings
    emb.position_ids = torch.arange(emb.num_positions, device=device).unsqueeze(0)
    leftover = [n for n, b in model.named_buffers() if b.is_meta]
    if leftover:
        raise CheckpointError(f"buffers left uninitialised after load: {leftover}")


def save_snapshot(
    model: DeepseekOCRForCausalLM,
    folder: str | Path,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int | None = None,
    tokenizer: str | Path | None = None,
) -> list[Path]:
    """Write config.json + safetensors (one official-named file, or shards + index), and copy
    ``tokenizer`` (a tokenizer.json) beside them when given."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v if dtype is None else v.to(dtype)).detach().contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(state):
        nbytes = state[name].numel() * state[name].element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = state[name]
        size += nbytes
    cfg = model.config
    if dtype is not None:
        cfg = cfg.replace(torch_dtype=str(dtype).replace("torch.", ""))
    cfg.to_json_file(folder / CONFIG_NAME)
    paths: list[Path] = []
    weight_map: dict[str, str] = {}
    total = len(shards)
    for i, shard in enumerate(shards, 1):
        fname = SINGLE_FILE if total == 1 else f"model-{i:05d}-of-{total:06d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        paths.append(folder / fname)
        weight_map.update(dict.fromkeys(shard, fname))
    if total > 1:
        total_size = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    if tokenizer is not None:
        src = Path(tokenizer)
        src = src / "tokenizer.json" if src.is_dir() else src
        if src.resolve() != (folder / "tokenizer.json").resolve():
            shutil.copyfile(src, folder / "tokenizer.json")
    log.info("saved %d tensors in %d file(s) to %s", len(state), total, folder)
    return paths


def write_safetensors_streaming(
    path: str | Path,
    specs: list[tuple[str, tuple[int, ...], torch.dtype]],
    make: Callable[[str, tuple[int, ...], torch.dtype], torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> int:
    """Write a safetensors file one tensor at a time (``make`` builds each on demand), so peak
    memory is one tensor, not the whole state dict. Returns the file size."""
    header: dict[str, dict] = {}
    offset = 0
    for name, shape, dtype in specs:
        nbytes = torch.empty((), dtype=dtype).element_size()
        for s in shape:
            nbytes *= s
        header[name] = {
            "dtype": DTYPE_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    header["__metadata__"] = metadata or {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep tensor data 8-byte aligned
    with Path(path).open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape, dtype in specs:
            t = make(name, shape, dtype).to(dtype).contiguous()
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"{name}: made shape {tuple(t.shape)}, declared {tuple(shape)}")
            f.write(t.view(torch.uint8).numpy().tobytes())
    return 8 + len(raw) + offset


def encoder_weights_id(model: DeepseekOCRForCausalLM) -> str:
    """Stable id of everything that shapes vision tokens (encoder, projector, layout vectors)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(model.config.to_hf_dict(), sort_keys=True).encode())
    m = model.model
    for prefix, mod in (("sam", m.sam_model), ("clip", m.vision_model), ("proj", m.projector)):
        for name, t in sorted(mod.state_dict().items()):
            h.update(f"{prefix}.{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    for t in (m.image_newline, m.view_seperator):
        h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
