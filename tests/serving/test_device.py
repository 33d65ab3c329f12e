"""Device and dtype as configuration (``ocrstream.serving.device``) and the in-process loader's use of
it. The CUDA-only checks run where a GPU is present (bench/gpu_check.sh runs this file there)."""

from __future__ import annotations

import pytest
import torch

from ocrstream.config import CommonConfig
from ocrstream.serving import device as dv
from tests.serving.helpers import fresh_seed

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (none on this machine)")


def test_device_specs_resolve_by_what_torch_sees():
    assert dv.resolve_device("auto", cuda_available=False) == torch.device("cpu")
    assert dv.resolve_device("auto", cuda_available=True) == torch.device("cuda")
    assert dv.resolve_device(" CPU ", cuda_available=True) == torch.device("cpu")
    assert dv.resolve_device("cuda:1", cuda_available=True) == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="'cuda' asked for but torch sees no CUDA GPU"):
        dv.resolve_device("cuda", cuda_available=False)
    for bad in ("gpu", "cuda:x", "cpu:0", "tpu"):
        with pytest.raises(ValueError, match=f"device {bad!r} is not one of auto, cuda, cuda:<n>, cpu"):
            dv.resolve_device(bad, cuda_available=True)


def test_dtype_policy_bf16_on_gpu_fp32_on_cpu_explicit_wins():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert dv.resolve_dtype("", cpu) is torch.float32
    assert dv.resolve_dtype(None, gpu) is torch.bfloat16
    assert dv.resolve_dtype("bf16", cpu) is torch.bfloat16
    assert dv.resolve_dtype("torch.float16", gpu) is torch.float16
    assert dv.resolve_dtype(torch.float32, gpu) is torch.float32
    with pytest.raises(ValueError, match="dtype 'int8' is not one of"):
        dv.resolve_dtype("int8", cpu)


def test_instance_kind_and_instance_device():
    assert [dv.instance_kind(d) for d in ("cpu", "auto", "cuda", "cuda:3")] == [
        "KIND_CPU",
        "KIND_CPU",
        "KIND_GPU",
        "KIND_GPU",
    ]
    assert dv.instance_device(
        {"model_instance_kind": "CPU", "model_instance_device_id": "0"}
    ) == torch.device("cpu")
    if not CUDA:
        with pytest.raises(ValueError, match="KIND_GPU instance on device 0 but torch sees no CUDA GPU"):
            dv.instance_device({"model_instance_kind": "GPU", "model_instance_device_id": "0"})


def test_device_settings_come_from_the_environment():
    c = CommonConfig.from_env({"OCRSTREAM_DEVICE": "auto", "OCRSTREAM_DTYPE": "bfloat16"})
    assert (c.device, c.dtype) == ("auto", "bfloat16")
    assert (CommonConfig.from_env({}).device, CommonConfig.from_env({}).dtype) == ("cpu", "")


def test_stage_to_device_keeps_values_on_cpu():
    gen = torch.Generator().manual_seed(fresh_seed())
    t = torch.randn(7, 5, generator=gen)
    out = dv.stage_to_device(t, torch.device("cpu"), torch.bfloat16)
    assert out.dtype is torch.bfloat16 and torch.equal(out, t.to(torch.bfloat16))
    assert torch.equal(dv.stage_to_device(t, torch.device("cpu")), t)


def _bf16_snapshot(folder):
    """The tiny model saved in bf16 with a config that says so (as the official checkpoint does)."""
    from ocrstream.model.weights import save_snapshot
    from tests.serving.helpers import tiny_model
    from tests.tiny import tiny_tokenizer

    model = tiny_model(fresh_seed())
    model.config.torch_dtype = "bfloat16"
    save_snapshot(model, folder, dtype=torch.bfloat16)
    tiny_tokenizer(model.config.decoder.vocab_size).save(str(folder / "tokenizer.json"))
    return model


def test_inprocess_loader_puts_the_model_where_configured(tmp_path):
    """The CPU path is fp32 even for a checkpoint saved in bf16; an explicit dtype wins; cuda
    without a GPU is refused before anything loads."""
    from ocrstream.backends.inprocess import load_model
    from ocrstream.model.runtime import OcrModel

    model = _bf16_snapshot(tmp_path)
    want = model.lm_head.weight.to(torch.bfloat16)
    assert OcrModel.load(tmp_path).model.dtype is torch.bfloat16  # the checkpoint's own dtype
    loaded = load_model(str(tmp_path), "cpu")
    assert loaded.device == torch.device("cpu") and loaded.model.dtype is torch.float32
    assert torch.equal(loaded.model.lm_head.weight, want.float())
    explicit = load_model(str(tmp_path), "cpu", "bfloat16")
    assert explicit.model.dtype is torch.bfloat16 and torch.equal(explicit.model.lm_head.weight, want)
    if not CUDA:
        assert load_model(str(tmp_path), "auto").device == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            load_model(str(tmp_path), "cuda")


@needs_cuda
def test_stage_to_device_goes_through_pinned_memory_on_cuda():
    gen = torch.Generator().manual_seed(fresh_seed())
    t = torch.randn(300, 64, generator=gen)
    out = dv.stage_to_device(t, torch.device("cuda"), torch.bfloat16)
    assert out.is_cuda and out.dtype is torch.bfloat16
    assert torch.equal(out.cpu(), t.to(torch.bfloat16))


@needs_cuda
def test_inprocess_loader_uses_bf16_on_cuda(tmp_path):
    from ocrstream.backends.inprocess import load_model

    model = _bf16_snapshot(tmp_path)
    loaded = load_model(str(tmp_path), "auto")
    assert loaded.device.type == "cuda" and loaded.model.dtype is torch.bfloat16
    assert torch.equal(loaded.model.lm_head.weight.cpu(), model.lm_head.weight.to(torch.bfloat16))
