"""Encoder/decoder backends: protocols (``base``), in-process adapters (``inprocess``); a Triton
gRPC decoder backend plugs in as ``ocrstream.backends.triton.TritonDecoder`` (selected by
``OCRSTREAM_DECODER_BACKEND=triton``)."""

from __future__ import annotations

from typing import Any

from ocrstream.backends.base import Decoded, DecoderBackend, Encoded, EncoderBackend

__all__ = ["Decoded", "DecoderBackend", "Encoded", "EncoderBackend", "build_decoder_backend"]


def build_decoder_backend(kind: str, model: Any = None, triton_url: str = "") -> DecoderBackend:
    """``inprocess`` needs ``model`` (an OcrModel); ``triton`` needs ``triton_url``."""
    if kind == "inprocess":
        from ocrstream.backends.inprocess import InProcessDecoder

        if model is None:
            raise ValueError("the inprocess decoder backend needs a loaded model")
        return InProcessDecoder(model)
    if kind == "triton":
        try:
            from ocrstream.backends.triton import TritonDecoder  # type: ignore[import-not-found]
        except ModuleNotFoundError as exc:
            raise ValueError("decoder backend 'triton' is not installed in this build") from exc
        return TritonDecoder(triton_url)
    raise ValueError(f"unknown decoder backend {kind!r} (expected inprocess or triton)")
