"""The vision-token cache interface: bytes by key, with a TTL, evicting least-recently-used."""

from __future__ import annotations

import struct
from typing import Protocol

from ocrstream.errors import CorruptDocument


class Cache(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl_s: int | None = None) -> None: ...

    def delete(self, key: str) -> None: ...


_MAGIC = b"OCVT"


def pack_tokens(data: bytes, n_vision_tokens: int) -> bytes:
    """Cached/stored token blob: magic, vision-token count, the backend's serialized tokens."""
    return _MAGIC + struct.pack("<I", n_vision_tokens) + data


def unpack_tokens(blob: bytes) -> tuple[int, bytes]:
    if blob[:4] != _MAGIC:
        raise CorruptDocument(f"token blob has no {_MAGIC!r} header (first bytes {blob[:8]!r})")
    (n,) = struct.unpack("<I", blob[4:8])
    return n, blob[8:]
