"""The chart gives the ingest API its keys (a Secret it writes, or an existing one) and refuses to
render an ingest without keys unless devOpen is set."""

from __future__ import annotations

import os
from typing import Any

import pytest

from .helmlib import CHART, RELEASE, load_values, render

CI = CHART / "ci"


def _ingest_env(rendered: Any) -> dict[str, dict[str, Any]]:
    pod = rendered.component("Deployment", "ingest")["spec"]["template"]["spec"]
    (c,) = [c for c in pod["containers"] if c["name"] == "ingest"]
    return {e["name"]: e for e in c["env"]}


def test_keys_from_values_go_to_a_secret(helm: Any) -> None:
    keys = [os.urandom(12).hex() for _ in range(2)]
    rendered = render(helm, load_values(CI / "default-values.yaml", overrides={"ingest": {"apiKeys": keys}}))
    secret = rendered.component("Secret", "ingest-api-keys")
    assert secret["stringData"]["api-keys"] == ",".join(keys)
    env = _ingest_env(rendered)
    assert env["OCRSTREAM_INGEST_API_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-ocrstream-ingest-api-keys",
        "key": "api-keys",
    }
    assert "OCRSTREAM_INGEST_DEV_OPEN" not in env
    for key in keys:  # the keys are in the Secret only, never in a pod spec or ConfigMap
        assert all(key not in str(o) for o in rendered.objects if o["kind"] != "Secret")


def test_existing_secret_and_dev_open(helm: Any) -> None:
    rendered = render(helm, load_values(CI / "gpu-values.yaml"))
    assert _ingest_env(rendered)["OCRSTREAM_INGEST_API_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "ocrstream-api-keys",
        "key": "keys",
    }
    assert [s for s in rendered.kind("Secret") if "ingest-api-keys" in s["metadata"]["name"]] == []
    env = _ingest_env(render(helm, load_values(CI / "dev-cpu-values.yaml")))
    assert env["OCRSTREAM_INGEST_DEV_OPEN"]["value"] == "1" and "OCRSTREAM_INGEST_API_KEYS" not in env


@pytest.mark.parametrize(
    ("ingest", "message"),
    [
        ({"apiKeys": []}, "ingest needs API keys"),
        ({"apiKeys": ["k" * 20], "apiKeysSecret": {"name": "x"}}, "not both"),
    ],
)
def test_ingest_without_keys_is_refused(helm: Any, ingest: dict[str, Any], message: str) -> None:
    values = load_values(CI / "hpa-values.yaml", overrides={"ingest": ingest})
    with pytest.raises(helm.HelmError) as exc:
        render(helm, values)
    assert message in str(exc.value)


def test_short_keys_fail_the_schema(helm: Any) -> None:
    values = load_values(CI / "hpa-values.yaml", overrides={"ingest": {"apiKeys": ["short"]}})
    with pytest.raises(helm.HelmError) as exc:
        render(helm, values)
    assert "/ingest/apiKeys/0" in str(exc.value)
