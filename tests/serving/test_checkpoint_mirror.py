"""The s3:// checkpoint mirror: object names cannot write outside the cache folder, and S3 is never
reached with default credentials."""

from __future__ import annotations

import io
import json
import os
import random
import string
from dataclasses import dataclass
from pathlib import Path

import pytest

from ocrstream.model.weights import CheckpointError
from ocrstream.serving.checkpoint import download_snapshot, mirror_path, resolve_checkpoint


def _words(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits + "_-", k=rng.randint(1, 10)))


def _hostile(rng: random.Random) -> str:
    """A relative-looking name that points outside the folder it is joined onto."""
    parts = [_words(rng) for _ in range(rng.randint(0, 3))]
    pick = rng.randrange(5)
    if pick == 0:
        return "/".join(parts + [".."] * (len(parts) + rng.randint(1, 3)) + [_words(rng)])
    if pick == 1:
        return "/" + "/".join(parts + [_words(rng)])  # absolute (e.g. from "prefix//etc/x")
    if pick == 2:
        return "/".join(parts + ["..", _words(rng)])  # '..' anywhere is refused outright
    if pick == 3:
        return "\\".join(parts + ["..", "..", _words(rng)])  # Windows separators
    return "/".join(parts + [".", _words(rng)])


def test_mirror_path_keeps_names_inside_and_refuses_traversal(tmp_path):
    rng = random.Random(os.urandom(8))
    dest = tmp_path / "cache" / "ckpt"
    for _ in range(200):
        rel = "/".join(_words(rng) for _ in range(rng.randint(1, 4)))
        assert mirror_path(dest, rel) == (dest / rel).resolve()
        bad = _hostile(rng)
        with pytest.raises(CheckpointError, match="refusing object name|resolves outside"):
            mirror_path(dest, bad)
    # A symlink planted in the cache folder does not lead out either.
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "link").symlink_to(tmp_path)
    with pytest.raises(CheckpointError, match="resolves outside"):
        mirror_path(dest, "link/escape.bin")


@dataclass
class _Obj:
    object_name: str


class _ListingWith:
    """A real MinIO client whose listing also shows ``extra`` objects it serves itself: AWS S3
    accepts keys like ``ckpt/../../x`` that the dev server (versitygw) and the MinIO SDK refuse to
    store, so the hostile names are injected at the client interface."""

    def __init__(self, client, extra: dict[str, bytes]) -> None:  # noqa: ANN001 - Minio
        self.client, self.extra, self.fetched = client, extra, []

    def list_objects(self, bucket, prefix="", recursive=False):  # noqa: ANN001, ANN201
        yield from self.client.list_objects(bucket, prefix=prefix, recursive=recursive)
        yield from (_Obj(k) for k in self.extra)

    def fget_object(self, bucket, name, path):  # noqa: ANN001, ANN201
        self.fetched.append(name)
        if name in self.extra:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(self.extra[name])
            return None
        return self.client.fget_object(bucket, name, path)


def _upload_snapshot(minio_client, bucket: str, prefix: str, rng: random.Random) -> dict[str, bytes]:
    files = {"config.json": json.dumps({"seed": rng.random()}).encode()}
    for _ in range(3):
        files[f"{_words(rng)}/{_words(rng)}.bin"] = os.urandom(rng.randint(1, 64))
    for rel, data in files.items():
        minio_client.put_object(bucket, f"{prefix}/{rel}", io.BytesIO(data), len(data))
    return files


@pytest.mark.minio
def test_download_mirrors_a_snapshot_and_refuses_hostile_names(minio_client, minio_bucket, tmp_path):
    rng = random.Random(os.urandom(8))
    files = _upload_snapshot(minio_client, minio_bucket, "ckpt", rng)
    dest = tmp_path / "cache" / "a"
    assert download_snapshot(minio_client, minio_bucket, "ckpt", dest) == len(files)
    assert {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()} == files

    escape = f"escape-{_words(rng)}.txt"
    hostile = _ListingWith(minio_client, {f"ckpt/../../{escape}": b"owned"})
    dest2 = tmp_path / "cache" / "b"
    with pytest.raises(CheckpointError, match="refusing object name"):
        download_snapshot(hostile, minio_bucket, "ckpt", dest2)
    assert not (tmp_path / escape).exists() and not (tmp_path / "cache" / escape).exists()
    assert hostile.fetched == [], "names are checked before anything is downloaded"


@pytest.mark.minio
def test_s3_checkpoint_without_credentials_fails_fast(
    minio_endpoint, minio_client, minio_bucket, tmp_path, monkeypatch
):
    rng = random.Random(os.urandom(8))
    files = _upload_snapshot(minio_client, minio_bucket, "snap", rng)
    for var in ("OCRSTREAM_S3_ACCESS_KEY", "OCRSTREAM_S3_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OCRSTREAM_S3_ENDPOINT", minio_endpoint.endpoint)
    spec = f"s3://{minio_bucket}/snap"
    with pytest.raises(ValueError, match="OCRSTREAM_S3_ACCESS_KEY and OCRSTREAM_S3_SECRET_KEY are empty"):
        resolve_checkpoint(spec, cache_dir=tmp_path)
    monkeypatch.setenv("OCRSTREAM_S3_ACCESS_KEY", minio_endpoint.access_key)
    monkeypatch.setenv("OCRSTREAM_S3_SECRET_KEY", minio_endpoint.secret_key)
    folder = resolve_checkpoint(spec, cache_dir=tmp_path)
    assert (folder / "config.json").read_bytes() == files["config.json"]
