"""No default S3 credentials in code: S3 chosen without them fails at start with the variables to set."""

from __future__ import annotations

import os
import random
import string
from pathlib import Path

import pytest

from ocrstream.config import CommonConfig, env_table
from ocrstream.services.wiring import build_store
from ocrstream.store.local import LocalStore

REPO = Path(__file__).resolve().parents[2]


def test_s3_store_without_credentials_fails_fast() -> None:
    with pytest.raises(ValueError, match="OCRSTREAM_S3_ACCESS_KEY and OCRSTREAM_S3_SECRET_KEY are empty"):
        build_store(CommonConfig.from_env({}))
    rng = random.Random(os.urandom(8))
    key = "".join(rng.choices(string.ascii_letters, k=12))
    with pytest.raises(ValueError, match="OCRSTREAM_S3_SECRET_KEY is empty"):
        build_store(CommonConfig.from_env({"OCRSTREAM_S3_ACCESS_KEY": key}))
    with pytest.raises(ValueError, match="OCRSTREAM_S3_ACCESS_KEY is empty"):
        build_store(CommonConfig.from_env({"OCRSTREAM_S3_SECRET_KEY": key}))
    common = CommonConfig.from_env({"OCRSTREAM_S3_ACCESS_KEY": key, "OCRSTREAM_S3_SECRET_KEY": key[::-1]})
    assert common.s3_credentials() == (key, key[::-1])


def test_local_store_needs_no_credentials(tmp_path) -> None:
    assert isinstance(
        build_store(CommonConfig.from_env({}, store="local", store_dir=str(tmp_path))), LocalStore
    )


def test_no_default_credentials_anywhere_in_the_code() -> None:
    defaults = {name: default for name, default, _ in env_table()}
    assert defaults["OCRSTREAM_S3_ACCESS_KEY"] == "" and defaults["OCRSTREAM_S3_SECRET_KEY"] == ""
    # The dev credentials live only in scripts/infra/defaults.env (and the tests that read it).
    hits = [
        str(p.relative_to(REPO))
        for tree in ("ocrstream", "services", "kernels", "model_repo", "charts", "docker")
        for p in (REPO / tree).rglob("*")
        if p.is_file()
        and p.suffix in {".py", ".yaml", ".tpl", ".json", ".pbtxt", ".Dockerfile", ".txt"}
        and "minioadmin" in p.read_text(errors="replace")
    ]
    assert hits == []
