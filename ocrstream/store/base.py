"""The blob-store interface: documents, page images, durable vision tokens, results, job status.

Writes are whole-object puts keyed by deterministic names (doc id, page, stage), so a redelivered
message rewrites the same object: idempotent by construction. Records that several replicas
update (job status) use the conditional pair ``get_versioned`` / ``put_if``: a compare-and-set on
the object's version (its S3 ETag, a content hash in the local store); ``update_json`` is the
read-modify-write loop over it.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from ocrstream.errors import NotFound, TransientError


class WriteConflict(TransientError):
    """A conditional write lost: the object changed (or appeared, or vanished) since it was read."""

    reason = "write_conflict"


class Store(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...

    def get(self, key: str) -> bytes:
        """Raises ``NotFound`` for a missing key."""

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and its version tag (opaque; S3: the ETag). Raises ``NotFound``."""

    def put_if(
        self, key: str, data: bytes, version: str | None, content_type: str = "application/octet-stream"
    ) -> None:
        """Write only if the object is still at ``version`` (``None``: only if it does not exist);
        otherwise raise ``WriteConflict`` and change nothing. Atomic against other ``put_if``."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str, start_after: str = "") -> list[str]:
        """Keys under ``prefix`` that sort after ``start_after``, sorted."""

    def delete(self, key: str) -> None: ...


def put_json(store: Store, key: str, obj: Any) -> None:
    store.put(key, _dumps(obj), "application/json")


def get_json(store: Store, key: str) -> Any:
    return json.loads(store.get(key))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=1).encode()


REV = "rev"  # field update_json stamps on every record it writes


def update_json(
    store: Store,
    key: str,
    update: Callable[[dict[str, Any] | None], dict[str, Any] | None],
    attempts: int = 20,
    rev: str = "",
) -> dict[str, Any] | None:
    """Read-modify-write of a JSON record with a compare-and-set: ``update(current or None)``
    returns the new record, or ``None`` to leave it alone (then this returns ``None``). On a lost
    race the record is read again and ``update`` runs on the winner's value, so no update is lost.

    The written record carries ``rev`` (default: fresh per call): a write that landed although its
    answer was lost (a connection reset, then the client's own resend refused as a conflict) is
    recognised by its rev on the next read and counts as done, instead of being applied twice; a
    caller that retries a whole update later passes the same ``rev`` for the same effect. After
    ``attempts`` lost races raises ``WriteConflict`` (transient: the worker retries the record)."""
    mine = rev or uuid.uuid4().hex
    for attempt in range(attempts):
        try:
            data, version = store.get_versioned(key)
            current: dict[str, Any] | None = json.loads(data)
        except NotFound:
            current, version = None, None
        if current is not None and current.get(REV) == mine:
            return current  # an earlier attempt of this update was written after all
        new = update(None if current is None else dict(current))
        if new is None:
            return None
        new = {**new, REV: mine}
        try:
            store.put_if(key, _dumps(new), version, "application/json")
            return new
        except WriteConflict:
            # Back off a little, randomised, so racing replicas do not collide in lockstep.
            time.sleep(random.uniform(0, 0.005 * (attempt + 1)))
    raise WriteConflict(f"{key}: {attempts} conditional writes in a row lost the race")
