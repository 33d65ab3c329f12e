"""skaffold.yaml is only run where Docker and a cluster exist; here its structure is checked and each
profile's Helm release is rendered with the images skaffold would inject."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from .helmlib import CHART, REPO, deep_merge, load_values, render

SKAFFOLD = yaml.safe_load((REPO / "skaffold.yaml").read_text())


def _artifacts(profile: dict[str, Any]) -> list[dict[str, Any]]:
    arts = list(SKAFFOLD["build"]["artifacts"])
    for patch in profile.get("patches", []):
        assert (patch["op"], patch["path"]) == ("add", "/build/artifacts/-"), patch
        arts.append(patch["value"])
    return arts


def _dotted(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def test_config_shape() -> None:
    assert re.fullmatch(r"skaffold/v4beta\d+", SKAFFOLD["apiVersion"])
    assert SKAFFOLD["kind"] == "Config"
    assert {p["name"] for p in SKAFFOLD["profiles"]} == {"cpu", "gpu"}


@pytest.mark.parametrize("profile", SKAFFOLD["profiles"], ids=lambda p: p["name"])
def test_profile(helm: Any, profile: dict[str, Any]) -> None:
    arts = _artifacts(profile)
    images = [a["image"] for a in arts]
    assert len(images) == len(set(images)) == 5
    for art in arts:
        dockerfile = REPO / art["context"] / art["docker"]["dockerfile"]
        assert dockerfile.is_file(), dockerfile
    (release,) = profile["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"]).resolve() == CHART
    files = [REPO / f for f in release["valuesFiles"]]
    assert all(f.is_file() for f in files), files

    # Every built image is injected into the chart, and nothing else is.
    templates = release["setValueTemplates"]
    used = {m for v in templates.values() for m in re.findall(r"IMAGE_(?:REPO|TAG)_(\w+)", v)}
    assert used == {img.replace("-", "_") for img in images}

    # Render what skaffold would deploy, with stand-in registry/tag values.
    injected = {
        k: re.sub(
            r"\{\{\.IMAGE_(REPO|TAG)_(\w+)\}\}",
            lambda m: "reg.local/" + m.group(2) if m.group(1) == "REPO" else "dev1",
            v,
        )
        for k, v in templates.items()
    }
    values = deep_merge(load_values(*files), _dotted({**release.get("setValues", {}), **injected}))
    rendered = render(helm, values)
    for deployment in rendered.kind("Deployment"):
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            if deployment["metadata"]["labels"]["app.kubernetes.io/component"] in {
                "kafka",
                "redis",
                "minio",
                "otel-collector",
            }:
                continue
            assert c["image"].startswith("reg.local/ocrstream_") and c["image"].endswith(":dev1"), c["image"]
    encoder = rendered.component("Deployment", "encoder")["spec"]["template"]["spec"]["containers"][0]
    if profile["name"] == "gpu":
        assert encoder["image"] == "reg.local/ocrstream_encoder_cuda:dev1"
        assert encoder["resources"]["limits"]["nvidia.com/gpu"] == "1"
    else:
        assert encoder["image"] == "reg.local/ocrstream_encoder:dev1"
        triton = rendered.component("Deployment", "decoder")["spec"]["template"]["spec"]["containers"][0]
        assert "nvidia.com/gpu" not in triton["resources"]["limits"], "cpu profile runs Triton without a GPU"
