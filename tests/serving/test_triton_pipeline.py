"""The embedded pipeline with ``OCRSTREAM_DECODER_BACKEND=triton`` (sharded decoder on a real
tritonserver) gives the same page texts as with the in-process decoder, on a tiny random model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ocrstream.model.runtime import OcrModel
from ocrstream.pipeline.runner import Pipeline
from ocrstream.serving.repo import write_repository

pytestmark = pytest.mark.triton


def _noise_tiff(n: int) -> bytes:
    """Scanned pages without a text layer: the decoder's own output is the page text."""
    rng = np.random.default_rng()
    frames = [Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)) for _ in range(n)]
    buf = io.BytesIO()
    frames[0].save(buf, format="TIFF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def test_embedded_pipeline_triton_backend_matches_inprocess(triton, writing_snapshot, tmp_path, monkeypatch):
    folder, _ = writing_snapshot
    names = write_repository(triton.model_repo, str(folder), 2, decoder="dec_pipe", shard_prefix="shard_pipe")
    triton.load(names)
    try:
        model = OcrModel.load(folder)
        doc = tmp_path / "scan.tiff"
        doc.write_bytes(_noise_tiff(3))
        monkeypatch.setenv("OCRSTREAM_DECODER_TRITON_MODEL", "dec_pipe")
        pages = {}
        for backend in ("inprocess", "triton"):
            env = {
                "OCRSTREAM_INGEST_DEFAULT_MODE": "tiny",
                "OCRSTREAM_DECODER_BACKEND": backend,
                "OCRSTREAM_DECODER_TRITON_URL": triton.grpc_url,
                "OCRSTREAM_DECODER_MAX_NEW_TOKENS": "16",
                "OCRSTREAM_DECODER_LADDER": "t=0.0",  # greedy only: sampling rungs differ by design
                "OCRSTREAM_DECODER_MAX_BATCH": "4",
            }
            pipe = Pipeline.embedded(tmp_path / f"store-{backend}", model, env=env)
            [summary] = pipe.run([doc], tmp_path / f"out-{backend}")
            result = json.loads(Path(summary["json"]).read_text())
            pages[backend] = [
                (p["page"], p["text"], p["method"], [a.get("n_tokens") for a in p["attempts"]])
                for p in result["pages"]
            ]
        assert [p[0] for p in pages["triton"]] == [1, 2, 3]
        assert all(p[1] for p in pages["triton"])  # the model wrote something on every page
        assert pages["triton"] == pages["inprocess"]
        stats = triton.client.get_inference_statistics("dec_pipe", as_json=True)["model_stats"][0]
        assert int(stats["inference_stats"]["success"]["count"]) >= 3  # the pages went through Triton
    finally:
        triton.unload(names)
