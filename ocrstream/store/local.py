"""Local-folder store (embedded mode): one file per key, written atomically (temp + rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ocrstream.errors import NotFound, StoreUnavailable


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
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
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
            if p.is_file() and not p.name.startswith(".tmp-"):
                key = p.relative_to(base).as_posix()
                if key.startswith(prefix) and key > start_after:
                    out.append(key)
        return sorted(out)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
