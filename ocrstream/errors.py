"""The one exception tree of the streaming pipeline.

    OcrStreamError
    ├── PermanentError        bad input: dead-letter with a reason, never retried
    │   ├── InvalidMessage        a record that does not parse or validate against its schema
    │   ├── UnsupportedDocument   not a PDF/PNG/JPEG/TIFF
    │   ├── CorruptDocument       the PDF/image library could not read it
    │   ├── EncryptedDocument     password protected PDF
    │   ├── EmptyDocument         zero pages or zero bytes
    │   ├── OversizedDocument     too many bytes, pages or pixels
    │   ├── NotFound              a referenced blob/job/document does not exist
    │   └── AuthError             missing or wrong API key (ingest)
    └── TransientError        something we depend on is down: retried with backoff
        ├── BusUnavailable        Kafka
        ├── CacheUnavailable      Redis
        ├── StoreUnavailable      MinIO / S3 / local disk
        └── BackendUnavailable    the model backend (in-process or Triton)

Adapters map foreign exceptions (kafka, redis, minio, pypdfium2, PIL) into this tree in one place
each, chaining the original, so services only ever catch these two branches.
"""

from __future__ import annotations


class OcrStreamError(Exception):
    """Base class. ``reason`` is a short stable code (dead-letter reason, metric label)."""

    reason = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def detail(self) -> str:
        return str(self)


class PermanentError(OcrStreamError):
    reason = "permanent"


class InvalidMessage(PermanentError):
    reason = "invalid_message"


class UnsupportedDocument(PermanentError):
    reason = "unsupported"


class CorruptDocument(PermanentError):
    reason = "corrupt"


class EncryptedDocument(PermanentError):
    reason = "encrypted"


class EmptyDocument(PermanentError):
    reason = "empty"


class OversizedDocument(PermanentError):
    reason = "oversized"


class NotFound(PermanentError):
    reason = "not_found"


class AuthError(PermanentError):
    reason = "unauthorized"


class TransientError(OcrStreamError):
    reason = "transient"


class BusUnavailable(TransientError):
    reason = "bus_unavailable"


class CacheUnavailable(TransientError):
    reason = "cache_unavailable"


class StoreUnavailable(TransientError):
    reason = "store_unavailable"


class BackendUnavailable(TransientError):
    reason = "backend_unavailable"


__all__ = [
    "AuthError",
    "BackendUnavailable",
    "BusUnavailable",
    "CacheUnavailable",
    "CorruptDocument",
    "EmptyDocument",
    "EncryptedDocument",
    "InvalidMessage",
    "NotFound",
    "OcrStreamError",
    "OversizedDocument",
    "PermanentError",
    "StoreUnavailable",
    "TransientError",
    "UnsupportedDocument",
]
