"""Fixtures for the chart tests: the pinned Helm SDK, installed by scripts/install_helm.sh."""

from __future__ import annotations

from typing import Any

import pytest

from .helmlib import ensure_helm


@pytest.fixture(scope="session")
def helm() -> Any:
    """The helm_python module, installed (idempotently) by the repo's own script."""
    try:
        return ensure_helm()
    except RuntimeError as exc:
        pytest.fail(str(exc))
