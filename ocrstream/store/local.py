"""Local-folder store (embedded mode): one file per key, written atomically (temp + rename).

Conditional writes (``put_if``) compare a content hash under an exclusive ``flock`` on a lock
file beside the object (``.lock-<name>``), so they are atomic across threads and processes on one
machine; dot-files are never listed as keys.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from ocrstream.errors import NotFound, StoreUnavailable
from ocrstream.store.base import WriteConflict


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class LocalStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise ValueError(f"store key {key!r} escapes the store root {self.root}")
        return p

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write(path, data)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {path}: {exc}") from exc

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)  # one read: the version is the hash of exactly these bytes
        return data, _version(data)

    def put_if(
        self, key: str, data: bytes, version: str | None, content_type: str = "application/octet-stream"
    ) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.parent / f".lock-{path.name}", "ab") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                try:
                    current = _version(path.read_bytes())
                except FileNotFoundError:
                    current = None
                if current != version:
                    raise WriteConflict(f"{key}: version {current} is not the expected {version}")
                self._write(path, data)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {path}: {exc}") from exc

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"no object {key!r} in {self.root}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {key!r} in {self.root}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str, start_after: str = "") -> list[str]:
        base = self.root.resolve()
        out = []
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = (base / folder).resolve()
        if base != start and base not in start.parents:
            raise ValueError(f"store prefix {prefix!r} escapes the store root {self.root}")
        if not start.exists():
            return []
        for p in start.rglob("*"):
            if p.is_file() and not p.name.startswith("."):  # temp and lock files
                key = p.relative_to(base).as_posix()
                if key.startswith(prefix) and key > start_after:
                    out.append(key)
        return sorted(out)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
