"""SAM attention through the kernel dispatcher: Triton forced (CPU interpreter or GPU) equals the
PyTorch reference path, windowed and global blocks, with padding and rel-pos interpolation."""

from __future__ import annotations

import os

import pytest
import torch

from ocrstream.kernels import dispatch
from ocrstream.model.config import SamConfig
from ocrstream.model.sam_vit import SamEncoder

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton needs a GPU or TRITON_INTERPRET=1 (set by the root conftest without a GPU)",
)


def test_sam_triton_equals_reference(seed, monkeypatch):
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = SamConfig(
        img_size=128,
        width=32,
        depth=2,
        heads=2,
        window_size=5,
        global_attn_indexes=(1,),
        neck_chans=16,
        downsample_channels=(16, 32),
    )
    enc = SamEncoder(cfg).eval().to(dev)
    with torch.no_grad():
        for blk in enc.blocks:
            blk.attn.rel_pos_h.normal_(std=0.5)
            blk.attn.rel_pos_w.normal_(std=0.5)
    x = torch.randn(1, 3, 112, 112, device=dev)  # grid 7: windows pad 7 -> 10; global rel-pos 15 -> 13 rows
    calls = []
    real = dispatch.window_attention

    def spy(*a, **kw):
        calls.append(dispatch.use_triton(*a[:3]))
        return real(*a, **kw)

    monkeypatch.setattr(dispatch, "window_attention", spy)
    with torch.no_grad():
        monkeypatch.setenv(dispatch.ENV_VAR, "torch")
        ref = enc(x)
        monkeypatch.setenv(dispatch.ENV_VAR, "triton")
        got = enc(x)
    assert calls == [False, False, True, True]
    torch.testing.assert_close(got, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)
