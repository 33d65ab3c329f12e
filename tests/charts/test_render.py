"""Every ci/*-values.yaml scenario lints, renders, and validates against the Kubernetes, KEDA and
Prometheus Operator schemas; then the properties the deployment relies on are asserted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .helmlib import CHART, CI_VALUES, RELEASE, Rendered, load_values, render

SCHEMAS = Path(__file__).parent / "schemas"
KUBE_VERSIONS = ("1.30", "1.37")  # oldest we document, newest the validator ships
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda-scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor.json",
}
LAG_SCALED = ("rasterizer", "encoder", "decoder", "assembler")
# component -> (group stage, input topic, kafka.topics key), as the services name them.
CONSUMERS = {
    "rasterizer": ("rasterize", "document.submitted", "submitted"),
    "encoder": ("encode", "page.rasterized", "rasterized"),
    "decoder": ("decode", "page.encoded", "encoded"),
    "assembler": ("assemble", "page.decoded", "decoded"),
}
IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]


@pytest.fixture(scope="module", params=CI_VALUES, ids=IDS)
def scenario(request: pytest.FixtureRequest, helm: Any) -> tuple[dict[str, Any], Rendered]:
    values = load_values(request.param)
    return values, render(helm, values)


def _chart_values(values: dict[str, Any]) -> dict[str, Any]:
    from .helmlib import deep_merge

    return deep_merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)


def test_scenarios_exist() -> None:
    assert {"default", "dev-infra", "hpa", "gpu", "external-secrets", "fixed-replicas"} <= set(IDS)


@pytest.mark.parametrize("values_file", CI_VALUES, ids=IDS)
def test_lint(helm: Any, values_file: Path) -> None:
    report = helm.lint(str(CHART), load_values(values_file), strict=True, namespace="ocr")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert report["total_charts_linted"] == 1
    assert problems == [], problems


def test_objects_validate_against_schemas(scenario: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = scenario
    assert rendered.objects, "nothing rendered"
    crd_validators = {
        k: jsonschema.Draft202012Validator(json.loads(p.read_text())) for k, p in CRD_SCHEMAS.items()
    }
    for obj in rendered.objects:
        key = (obj["apiVersion"], obj["kind"])
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if key in crd_validators:
            errors = [f"{list(e.path)}: {e.message}" for e in crd_validators[key].iter_errors(obj)]
            assert errors == [], f"{where}: {errors}"
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where} invalid for Kubernetes {version}: {list(exc.path)}: {exc.message}")


def test_names_unique_per_kind(scenario: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = scenario
    seen = [(o["kind"], o["metadata"]["name"]) for o in rendered.objects]
    assert len(seen) == len(set(seen)), sorted(seen)


def _pod_specs(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for kind in ("Deployment", "StatefulSet", "Job"):
        for o in rendered.kind(kind):
            out.append((f"{kind}/{o['metadata']['name']}", o["spec"]["template"]["spec"]))
    return out


def test_pods_are_locked_down(scenario: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = scenario
    for where, pod in _pod_specs(rendered):
        assert pod["enableServiceLinks"] is False, where
        # Only the decoder with the ConfigMap placement store talks to the API (its own account).
        api = where.endswith("-decoder") and pod["serviceAccountName"].endswith("-decoder")
        assert pod["automountServiceAccountToken"] is api, where
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
            assert sc["runAsNonRoot"] is True, (where, c["name"])
            if "kafka" not in where:  # the dev broker image writes its config at start (dev only)
                assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
                # A read-only root needs a writable /tmp.
                assert "/tmp" in {m["mountPath"] for m in c.get("volumeMounts", [])}, (where, c["name"])
            assert ":latest" not in c["image"] and ":" in c["image"], c["image"]
            assert "resources" in c and c["resources"].get("limits", {}).get("memory"), (where, c["name"])


def test_labels_come_from_one_helper(scenario: tuple[dict[str, Any], Rendered]) -> None:
    _, rendered = scenario
    for o in rendered.objects:
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ocrstream"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/part-of"] == "ocrstream"
        assert labels["helm.sh/chart"] == "ocrstream-0.1.0"
        assert labels["app.kubernetes.io/component"]
    for o in rendered.kind("Deployment") + rendered.kind("StatefulSet"):
        selector = o["spec"]["selector"]["matchLabels"]
        assert set(selector) == {
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
        }
        assert selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()


def test_probes_hit_the_health_endpoints(scenario: tuple[dict[str, Any], Rendered]) -> None:
    values, rendered = scenario
    v = _chart_values(values)
    for name in ("ingest", "rasterizer", "encoder", "assembler"):
        if not v[name]["enabled"]:
            continue
        (c,) = rendered.component("Deployment", name)["spec"]["template"]["spec"]["containers"]
        port = "http" if name == "ingest" else "metrics"
        want = v["ingest"]["httpPort"] if name == "ingest" else v[name]["metricsPort"]
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {port: want}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    pod = rendered.component("Deployment", "decoder")["spec"]["template"]["spec"]
    triton, consumer = pod["containers"]
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "triton-http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "triton-http"}
    assert consumer["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def _scaler_trigger(so: dict[str, Any]) -> dict[str, str]:
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    return trigger["metadata"]


def test_consumers_scale_on_their_own_group_and_topic(scenario: tuple[dict[str, Any], Rendered]) -> None:
    values, rendered = scenario
    v = _chart_values(values)
    topics = v["kafka"]["topics"]
    prefix = v["kafka"]["topicPrefix"]
    expected = {name: (prefix + group, prefix + topic) for name, (group, topic, _) in CONSUMERS.items()}
    for name in LAG_SCALED:
        bounds = v[name]["autoscaling"]
        partitions = topics[CONSUMERS[name][2]]["partitions"]
        deployment = rendered.component("Deployment", name)
        if not bounds["enabled"]:
            assert deployment["spec"]["replicas"] == v[name]["replicas"] <= partitions
            continue
        assert "replicas" not in deployment["spec"], "autoscaled Deployments leave replicas to the scaler"
        if v["keda"]["enabled"]:
            so = rendered.component("ScaledObject", name)
            meta = _scaler_trigger(so)
            assert (meta["consumerGroup"], meta["topic"]) == expected[name]
            assert so["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
            assert so["spec"]["minReplicaCount"] == bounds["minReplicas"]
            assert so["spec"]["maxReplicaCount"] == bounds["maxReplicas"] <= partitions
            assert meta["lagThreshold"] == str(bounds["lagThreshold"])
            assert meta["allowIdleConsumers"] == "false"
            assert meta["bootstrapServers"], "KEDA needs the bootstrap"
        else:
            hpa = rendered.component("HorizontalPodAutoscaler", name)
            assert hpa["spec"]["maxReplicas"] == bounds["maxReplicas"] <= partitions
            externals = [m for m in hpa["spec"]["metrics"] if m["type"] == "External"]
            if v["hpa"]["lagMetric"]["enabled"]:
                (ext,) = externals
                labels = ext["external"]["metric"]["selector"]["matchLabels"]
                assert (labels["consumergroup"], labels["topic"]) == expected[name]
            else:
                assert externals == []
    if v["keda"]["enabled"]:
        assert (
            rendered.kind("HorizontalPodAutoscaler")
            == [rendered.component("HorizontalPodAutoscaler", "ingest")]
            or not v["ingest"]["autoscaling"]["enabled"]
        )
    else:
        assert rendered.kind("ScaledObject") == []


KEDA_SCENARIOS = [
    p for p in CI_VALUES if p.name in ("default-values.yaml", "gpu-values.yaml", "dev-infra-values.yaml")
]


@pytest.mark.parametrize("values_file", KEDA_SCENARIOS, ids=lambda p: p.name)
def test_encoder_and_decoder_scalers_are_separate(helm: Any, values_file: Path) -> None:
    values = load_values(values_file)
    rendered = render(helm, values)
    v = _chart_values(values)
    enc = rendered.component("ScaledObject", "encoder")
    dec = rendered.component("ScaledObject", "decoder")
    assert enc["metadata"]["name"] != dec["metadata"]["name"]
    assert enc["spec"]["scaleTargetRef"]["name"].endswith("-encoder")
    assert dec["spec"]["scaleTargetRef"]["name"].endswith("-decoder")
    em, dm = _scaler_trigger(enc), _scaler_trigger(dec)
    assert (em["consumerGroup"], em["topic"]) == ("ocrstream.encode", "ocrstream.page.rasterized")
    assert (dm["consumerGroup"], dm["topic"]) == ("ocrstream.decode", "ocrstream.page.encoded")
    # Bounds and thresholds come from each service's own values.
    for so, meta, name in ((enc, em, "encoder"), (dec, dm, "decoder")):
        bounds = v[name]["autoscaling"]
        assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (
            bounds["minReplicas"],
            bounds["maxReplicas"],
        )
        assert meta["lagThreshold"] == str(bounds["lagThreshold"])
    assert em["lagThreshold"] != dm["lagThreshold"]


def test_deployment_annotations_feed_cluster_status(scenario: tuple[dict[str, Any], Rendered]) -> None:
    values, rendered = scenario
    v = _chart_values(values)
    prefix = v["kafka"]["topicPrefix"]
    for name in LAG_SCALED:
        ann = rendered.component("Deployment", name)["metadata"]["annotations"]
        group, topic, key = CONSUMERS[name]
        assert ann["ocrstream.io/consumer-group"] == prefix + group
        assert ann["ocrstream.io/input-topic"] == prefix + topic
        assert ann["ocrstream.io/partitions"] == str(v["kafka"]["topics"][key]["partitions"])


def test_every_consumer_has_pdb_and_networkpolicy(scenario: tuple[dict[str, Any], Rendered]) -> None:
    values, rendered = scenario
    for name in ("ingest", *LAG_SCALED):
        pdb = rendered.component("PodDisruptionBudget", name)
        assert pdb["spec"]["maxUnavailable"] == 1
        np = rendered.component("NetworkPolicy", name)
        assert np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == name
        ports = {p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]}
        assert ports, name
        if name == "decoder":
            # Triton's HTTP/gRPC stay pod-local (the consumer sidecar uses localhost); metrics only.
            assert ports == {8002, 9100}


def test_env_wiring(scenario: tuple[dict[str, Any], Rendered]) -> None:
    values, rendered = scenario
    v = _chart_values(values)
    cm = rendered.component("ConfigMap", "config")["data"]
    assert cm["OCRSTREAM_KAFKA_BOOTSTRAP"]
    assert cm["OCRSTREAM_TOPIC_PREFIX"] == v["kafka"]["topicPrefix"]
    host, _, port = cm["OCRSTREAM_S3_ENDPOINT"].rpartition(":")
    assert host and port.isdigit() and "/" not in host, "the services take host:port"
    assert cm["OCRSTREAM_S3_SECURE"] == str(v["objectStore"]["secure"]).lower()
    (c,) = rendered.component("Deployment", "encoder")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["OCRSTREAM_ENCODER_METRICS_PORT"]["value"] == str(v["encoder"]["metricsPort"])
    assert env["OCRSTREAM_DEVICE"]["value"] == v["encoder"]["variant"]
    (ic,) = rendered.component("Deployment", "ingest")["spec"]["template"]["spec"]["containers"]
    ienv = {e["name"]: e.get("value") for e in ic["env"]}
    assert ienv["OCRSTREAM_INGEST_HOST"] == "0.0.0.0", "bind beyond loopback or the probes fail"
    assert ienv["OCRSTREAM_INGEST_PORT"] == str(v["ingest"]["httpPort"])
    for var in ("OCRSTREAM_REDIS_URL", "OCRSTREAM_S3_ACCESS_KEY", "OCRSTREAM_S3_SECRET_KEY"):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        if var == "OCRSTREAM_REDIS_URL" and v["redis"]["existingSecret"]:
            assert ref == {"name": v["redis"]["existingSecret"], "key": v["redis"]["existingSecretKey"]}
        elif var != "OCRSTREAM_REDIS_URL" and v["objectStore"]["existingSecret"]:
            assert ref["name"] == v["objectStore"]["existingSecret"]
        else:
            assert ref["name"] == f"{RELEASE}-ocrstream-credentials"
            secret = rendered.component("Secret", "credentials")["stringData"]
            assert secret[ref["key"]], f"{var} empty in the chart's Secret"


def test_validators_are_not_vacuous(helm: Any) -> None:
    """The offline schemas catch the mistakes they are here for (a passing render proves nothing otherwise)."""
    rendered = render(helm, load_values(CI_VALUES[0]))
    keda = jsonschema.Draft202012Validator(
        json.loads(CRD_SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")].read_text())
    )
    so = rendered.component("ScaledObject", "encoder")
    assert list(keda.iter_errors(so)) == []
    broken = json.loads(json.dumps(so))
    broken["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 20  # CRD metadata is map[string]string
    del broken["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    broken["spec"]["maxReplicas"] = 3  # HPA spelling, not KEDA's
    messages = sorted(e.message for e in keda.iter_errors(broken))
    assert any("'consumerGroup' is a required property" in m for m in messages), messages
    assert any("20 is not of type 'string'" in m for m in messages), messages
    assert any("'maxReplicas' was unexpected" in m for m in messages), messages

    deployment = json.loads(json.dumps(rendered.component("Deployment", "encoder")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = True  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)
