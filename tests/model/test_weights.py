"""Checkpoint I/O: official manifest on the meta device, snapshots, strict errors, sparse verify."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from ocrstream.model.config import DeepseekOCRConfig, official_config
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.weights import (
    INDEX_NAME,
    SINGLE_FILE,
    CheckpointError,
    build_meta_model,
    compare_manifest,
    load_snapshot,
    read_manifest_tsv,
    save_snapshot,
    verify_snapshot,
)

from .helpers import tiny_config_for

DATA = Path(__file__).parent / "data"
MANIFEST = DATA / "deepseek-ocr-weights.tsv"


def test_official_config_json_parses_to_official_config():
    cfg = DeepseekOCRConfig.from_json_file(DATA / "official-config.json")
    ref = official_config()
    assert cfg.decoder == ref.decoder
    assert cfg.sam == ref.sam and cfg.clip == ref.clip and cfg.projector == ref.projector
    assert (cfg.image_token_id, cfg.max_crops, cfg.tile_tag) == (128815, 9, "2D")
    # our writer produces the same official keys (and no extra block for the official sizes)
    ours = ref.to_hf_dict()
    raw = json.loads((DATA / "official-config.json").read_text())
    for key in (
        "hidden_size",
        "n_routed_experts",
        "vision_config",
        "projector_config",
        "vocab_size",
        "topk_method",
    ):
        assert ours[key] == raw[key], key


def test_official_manifest_on_meta_device():
    model = build_meta_model(official_config())
    assert all(p.is_meta for p in model.parameters())
    state = model.state_dict()
    want = read_manifest_tsv(MANIFEST)
    rep = compare_manifest({k: tuple(v.shape) for k, v in state.items()}, want)
    assert rep.ok, rep.lines()[:20]
    assert len(state) == 2710
    assert sum(v.numel() for v in state.values()) == 3_336_106_240
    assert "model.vision_model.embeddings.position_ids" not in state
    assert all(info.dtype == "BF16" for info in want.values())


def small_model(seed_vocab: int = 64) -> DeepseekOCRForCausalLM:
    return DeepseekOCRForCausalLM(tiny_config_for(seed_vocab)).eval()


@pytest.mark.parametrize("shard", [None, 60_000])
def test_save_load_round_trip_bitwise(tmp_path, seed, shard):
    model = small_model()
    files = save_snapshot(model, tmp_path, max_shard_bytes=shard)
    assert (tmp_path / "config.json").exists()
    if shard is None:
        assert [f.name for f in files] == [SINGLE_FILE]
    else:
        assert len(files) > 1 and (tmp_path / INDEX_NAME).exists()
    loaded = load_snapshot(tmp_path)
    assert loaded.config.to_hf_dict() == model.config.to_hf_dict()
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    pix = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model.encode_images(pix).embeds[0], loaded.encode_images(pix).embeds[0])


def test_sharded_without_index_and_bf16(tmp_path, seed):
    model = small_model()
    save_snapshot(model, tmp_path, max_shard_bytes=80_000, dtype=torch.bfloat16)
    (tmp_path / INDEX_NAME).unlink()
    loaded = load_snapshot(tmp_path)  # dtype from config.json (bfloat16)
    assert loaded.dtype == torch.bfloat16
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.to(torch.bfloat16)), k
    as_f32 = load_snapshot(tmp_path, dtype="float32")
    assert as_f32.dtype == torch.float32


def test_missing_unexpected_misshapen_errors(tmp_path, seed):
    from safetensors.torch import load_file, save_file

    model = small_model()
    save_snapshot(model, tmp_path)
    state = load_file(str(tmp_path / SINGLE_FILE))
    del state["model.norm.weight"]
    state["model.extra.weight"] = torch.zeros(3)
    state["lm_head.weight"] = torch.zeros(5, 5)
    save_file(state, str(tmp_path / SINGLE_FILE))
    with pytest.raises(CheckpointError) as exc:
        load_snapshot(tmp_path)
    msg = str(exc.value)
    assert "missing: model.norm.weight" in msg
    assert "unexpected: model.extra.weight" in msg
    assert "misshapen: lm_head.weight expected [64, 64] got [5, 5]" in msg
    rep = exc.value.report
    assert rep.missing == ["model.norm.weight"] and rep.unexpected == ["model.extra.weight"]


def write_sparse_snapshot(folder: Path, manifest: dict, config_src: Path) -> Path:
    """Official names/shapes/bf16 header, file extended with truncate: no tensor data written."""
    folder.mkdir(parents=True, exist_ok=True)
    header, offset = {}, 0
    for name, info in sorted(manifest.items()):
        nbytes = info.numel * 2
        header[name] = {"dtype": "BF16", "shape": list(info.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path = folder / SINGLE_FILE
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    (folder / "config.json").write_text(config_src.read_text())
    return path


def test_sparse_official_snapshot_verifies(tmp_path):
    manifest = read_manifest_tsv(MANIFEST)
    path = write_sparse_snapshot(tmp_path / "snap", manifest, DATA / "official-config.json")
    assert path.stat().st_size > 6_672_212_480
    assert path.stat().st_blocks * 512 < 10_000_000  # sparse: nothing but the header on disk
    rep = verify_snapshot(tmp_path / "snap")
    assert rep.ok, rep.lines()[:10]
    # truncated data or a wrong shape fails
    bad = dict(manifest)
    bad.pop("model.norm.weight")
    write_sparse_snapshot(tmp_path / "bad", bad, DATA / "official-config.json")
    rep = verify_snapshot(tmp_path / "bad")
    assert not rep.ok and rep.missing == ["model.norm.weight"]


def test_streaming_writer_loads(tmp_path, seed):
    from ocrstream.model.weights import write_safetensors_streaming

    model = small_model()
    state = model.state_dict()
    specs = [(k, tuple(v.shape), torch.bfloat16) for k, v in sorted(state.items())]
    model.config.replace(torch_dtype="bfloat16").to_json_file(tmp_path / "config.json")
    write_safetensors_streaming(tmp_path / SINGLE_FILE, specs, lambda n, s, d: state[n])
    loaded = load_snapshot(tmp_path)
    for k, v in state.items():
        assert torch.equal(loaded.state_dict()[k], v.to(torch.bfloat16)), k
