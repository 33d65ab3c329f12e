"""Fixtures for the chart tests: the pinned Helm SDK, installed by scripts/install_helm.sh."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from typing import Any

import pytest

from .helmlib import REPO


@pytest.fixture(scope="session")
def helm() -> Any:
    """The helm_python module, installed (idempotently) by the repo's own script."""
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_helm.sh")], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/install_helm.sh failed ({proc.returncode}):\n{proc.stderr}")
    importlib.invalidate_caches()
    return importlib.import_module("helm_python")
