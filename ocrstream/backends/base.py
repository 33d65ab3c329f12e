"""Model backends as injected protocols, so the decoder can run in-process or on Triton by config.

Vision tokens cross the protocol as bytes (``VisionTokens.to_bytes()``): that is what the cache
and store hold, and what a remote backend ships over the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class Decoded:
    text: str
    token_ids: list[int]
    stopped: bool  # hit EOS before the budget
    n_tokens: int


@dataclass(frozen=True)
class Encoded:
    data: bytes  # serialized VisionTokens
    n_vision_tokens: int


class EncoderBackend(Protocol):
    @property
    def weights_id(self) -> str:
        """Stable id of the encoder weights (part of the token cache key)."""

    def encode(self, images: list[Image.Image], mode: str) -> list[Encoded]: ...


class DecoderBackend(Protocol):
    def decode(
        self,
        tokens: list[bytes],
        prompt: str,
        max_new_tokens: int,
        temperature: float = 0.0,
        ngram: tuple[int, int] | None = None,
    ) -> list[Decoded]: ...
