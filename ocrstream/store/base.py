"""The blob-store interface: documents, page images, durable vision tokens, results, job status.

Writes are whole-object puts keyed by deterministic names (doc id, page, stage), so a redelivered
message rewrites the same object: idempotent by construction.
"""

from __future__ import annotations

import json
from typing import Any, Protocol


class Store(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def get(self, key: str) -> bytes:
        """Raises ``NotFound`` for a missing key."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str, start_after: str = "") -> list[str]:
        """Keys under ``prefix`` that sort after ``start_after``, sorted."""

    def delete(self, key: str) -> None: ...


def put_json(store: Store, key: str, obj: Any) -> None:
    store.put(key, json.dumps(obj, ensure_ascii=False, indent=1).encode(), "application/json")


def get_json(store: Store, key: str) -> Any:
    return json.loads(store.get(key))
