"""Render and lint the chart through the pinned Helm SDK (helm-python-sdk, Helm Go SDK v4.2.3).

Rendering is offline: the SDK never contacts a cluster (`lookup` returns nothing), so the tests
run without network or Kubernetes. scripts/install_helm.sh installs and version-checks the SDK.
"""

from __future__ import annotations

import copy
import importlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ocrstream"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "rel"
NAMESPACE = "ocr"


def ensure_helm() -> Any:
    """Install (idempotently) and import the pinned Helm SDK through scripts/install_helm.sh."""
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_helm.sh")], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/install_helm.sh failed ({proc.returncode}):\n{proc.stderr}")
    importlib.invalidate_caches()
    return importlib.import_module("helm_python")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm-style merge of values: maps merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_values(*files: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in files:
        values = deep_merge(values, yaml.safe_load(f.read_text()) or {})
    return deep_merge(values, overrides or {})


@dataclass
class Rendered:
    """Rendered objects of one release, with lookups the assertions need."""

    objects: list[dict[str, Any]]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.kind(kind) if o["metadata"]["name"] == name]
        if len(found) != 1:
            names = sorted(o["metadata"]["name"] for o in self.kind(kind))
            raise KeyError(f"{kind}/{name}: found {len(found)} (have {names})")
        return found[0]

    def component(self, kind: str, component: str) -> dict[str, Any]:
        return self.get(kind, f"{RELEASE}-ocrstream-{component}")


def render(helm: Any, values: dict[str, Any]) -> Rendered:
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                objects.append(doc)
    return Rendered(objects)
