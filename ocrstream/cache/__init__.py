"""Vision-token cache: the protocol (``base``), Redis (``redis``) and in-process LRU (``memory``)."""

from ocrstream.cache.base import Cache
from ocrstream.cache.memory import MemoryCache

__all__ = ["Cache", "MemoryCache"]
