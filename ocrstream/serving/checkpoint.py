"""Checkpoint access for the serving models: resolve a local folder or an ``s3://`` snapshot, and
load only the tensors a model needs (the decoder's non-expert layers, or a shard's experts).

The decoder model never materialises routed experts or the vision encoder; a shard materialises
only ``model.layers.<L>.mlp.experts.<E>.*`` for the (layer, expert) pairs it holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ocrstream.model.config import DeepseekOCRConfig
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.weights import (
    CONFIG_NAME,
    CheckpointError,
    _resolve_dtype,
    build_meta_model,
    snapshot_files,
)

log = logging.getLogger(__name__)

EXPERT_RE = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
ENCODER_PREFIXES = (
    "model.sam_model.",
    "model.vision_model.",
    "model.projector.",
    "model.image_newline",
    "model.view_seperator",
)


def resolve_checkpoint(spec: str, cache_dir: str | Path | None = None) -> Path:
    """A local snapshot folder for ``spec``: a path, ``s3://bucket/prefix`` (downloaded once into the
    cache with the MinIO SDK and the ``OCRSTREAM_S3_*`` settings), or empty = the shipped model."""
    if not spec:
        from ocrstream.model.runtime import SHIPPED_MODEL_DIR

        if not (SHIPPED_MODEL_DIR / CONFIG_NAME).exists():
            raise CheckpointError(
                f"no checkpoint parameter and no shipped model at {SHIPPED_MODEL_DIR} (train it with "
                "`ocrstream train`, or set the model's 'checkpoint' parameter to a folder or s3:// prefix)"
            )
        return SHIPPED_MODEL_DIR
    if not spec.startswith("s3://"):
        path = Path(spec)
        if not (path / CONFIG_NAME).exists():
            raise CheckpointError(f"checkpoint {path} has no {CONFIG_NAME}")
        return path
    bucket, _, prefix = spec.removeprefix("s3://").partition("/")
    if not bucket:
        raise CheckpointError(f"checkpoint {spec!r}: expected s3://<bucket>/<prefix>")
    root = (
        Path(cache_dir or os.environ.get("OCRSTREAM_CACHE", Path.home() / ".cache" / "ocrstream"))
        / "checkpoints"
    )
    dest = root / hashlib.sha1(spec.encode()).hexdigest()[:16]
    if (dest / ".complete").exists():
        return dest
    from minio import Minio

    from ocrstream.config import CommonConfig

    c = CommonConfig.from_env()
    access, secret = c.s3_credentials()  # no default credentials: fails with the variables to set
    client = Minio(c.s3_endpoint, access_key=access, secret_key=secret, secure=c.s3_secure)
    n = download_snapshot(client, bucket, prefix, dest, spec)
    (dest / ".complete").write_text("ok\n")
    log.info("downloaded checkpoint %s (%d files) to %s", spec, n, dest)
    return dest


def download_snapshot(client, bucket: str, prefix: str, dest: Path, spec: str = "") -> int:  # noqa: ANN001 - Minio
    """Mirror ``bucket/prefix`` into ``dest`` (every object name checked by ``mirror_path`` before
    anything is written); returns the number of files. Raises CheckpointError."""
    from minio.error import S3Error

    prefix = prefix.rstrip("/") + "/" if prefix else ""
    try:
        objects = list(client.list_objects(bucket, prefix=prefix, recursive=True))
        todo = []
        for obj in objects:
            rel = obj.object_name[len(prefix) :]
            if not rel or rel.endswith("/"):
                continue
            todo.append((obj.object_name, mirror_path(dest, rel, spec)))
        for name, path in todo:
            client.fget_object(bucket, name, str(path))
    except S3Error as exc:
        raise CheckpointError(f"cannot download checkpoint {spec}: {exc}") from exc
    if not todo or not (dest / CONFIG_NAME).exists():
        raise CheckpointError(f"checkpoint {spec} holds no {CONFIG_NAME} ({len(todo)} objects)")
    return len(todo)


def mirror_path(dest: Path, rel: str, source: str = "") -> Path:
    """Where object ``rel`` (its name below the snapshot prefix) lands inside ``dest``. Names are
    whatever the bucket holds, so a '..' segment, an absolute name or a backslash could write
    outside the cache: such a snapshot is refused, and the resolved path must stay inside."""
    segments = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\x00" in rel
        or any(s in ("", ".", "..") for s in segments)
    ):
        raise CheckpointError(
            f"checkpoint {source or dest}: refusing object name {rel!r} (empty, '.' or '..' segments, "
            "absolute or backslashed names would leave the download folder)"
        )
    root = dest.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(root) or target == root:
        raise CheckpointError(f"checkpoint {source or dest}: object {rel!r} resolves outside {root}")
    return target


def _read_tensors(folder: Path, want: Callable[[str], bool], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for path in snapshot_files(folder):
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                if want(name):
                    out[name] = f.get_tensor(name).to(dtype)
    return out


def _is_decoder_core(name: str) -> bool:
    return not name.startswith(ENCODER_PREFIXES) and EXPERT_RE.match(name) is None


def load_decoder_core(
    folder: str | Path, dtype: torch.dtype | str | None = None, with_experts: bool = False
) -> DeepseekOCRForCausalLM:
    """The model with the decoder's weights loaded and the encoder left on the meta device; the
    routed experts are loaded only ``with_experts`` (a monolithic decoder), else dropped."""
    folder = Path(folder)
    cfg = DeepseekOCRConfig.from_json_file(folder / CONFIG_NAME)
    dt = _resolve_dtype(dtype, cfg)
    model = build_meta_model(cfg)
    want = (lambda n: not n.startswith(ENCODER_PREFIXES)) if with_experts else _is_decoder_core
    state = _read_tensors(folder, want, dt)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if want(k)}
    missing = sorted(set(expected) - set(state))
    bad = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or bad:
        raise CheckpointError(f"checkpoint {folder}: missing {missing[:8]}, misshapen {bad[:8]}")
    model.load_state_dict(state, strict=False, assign=True)
    if not with_experts:
        for layer in model.model.layers:
            if hasattr(layer.mlp, "experts"):
                layer.mlp.experts = torch.nn.ModuleList()  # held by the shards
    log.info("decoder core from %s: %d tensors (%s, experts %s)", folder, len(state), dt, with_experts)
    return model.eval()


def load_experts(
    folder: str | Path, wanted: Iterable[tuple[int, int]], dtype: torch.dtype | str | None = None
) -> tuple[DeepseekOCRConfig, dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """(layer, expert) -> (w_gate [I, H], w_up [I, H], w_down [H, I]) for the wanted pairs."""
    folder = Path(folder)
    cfg = DeepseekOCRConfig.from_json_file(folder / CONFIG_NAME)
    dt = _resolve_dtype(dtype, cfg)
    wanted = set(wanted)

    def want(name: str) -> bool:
        m = EXPERT_RE.match(name)
        return m is not None and (int(m.group(1)), int(m.group(2))) in wanted

    state = _read_tensors(folder, want, dt)
    out = {}
    for layer, e in sorted(wanted):
        pre = f"model.layers.{layer}.mlp.experts.{e}."
        try:
            out[(layer, e)] = tuple(state[pre + p + ".weight"] for p in ("gate_proj", "up_proj", "down_proj"))
        except KeyError as exc:
            raise CheckpointError(f"checkpoint {folder} lacks expert {e} of layer {layer}: {exc}") from exc
    return cfg, out  # type: ignore[return-value]


def encoder_weights_id_from_checkpoint(folder: str | Path, dtype: torch.dtype | str | None = None) -> str:
    """``weights.encoder_weights_id`` of the model this snapshot loads as (same dtype), computed by
    streaming the encoder tensors from disk: the decoder checks incoming vision tokens against it
    without ever holding the encoder."""
    from safetensors import safe_open

    folder = Path(folder)
    cfg = DeepseekOCRConfig.from_json_file(folder / CONFIG_NAME)
    dt = _resolve_dtype(dtype, cfg)
    where: dict[str, Path] = {}
    for path in snapshot_files(folder):
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                if name.startswith(ENCODER_PREFIXES):
                    where[name] = path

    def tensor(name: str) -> torch.Tensor:
        with safe_open(str(where[name]), framework="pt", device="cpu") as f:
            return f.get_tensor(name).to(dt)

    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(cfg.to_hf_dict(), sort_keys=True).encode())
    for prefix, full in (
        ("sam", "model.sam_model."),
        ("clip", "model.vision_model."),
        ("proj", "model.projector."),
    ):
        for name in sorted(n for n in where if n.startswith(full)):
            t = tensor(name)
            h.update(f"{prefix}.{name[len(full) :]}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.contiguous().view(torch.uint8).numpy().tobytes())
    for name in ("model.image_newline", "model.view_seperator"):
        h.update(tensor(name).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
