"""What each scenario file is for: GPU placement, dev infrastructure, external secrets, telemetry."""

from __future__ import annotations

import json
import random
from typing import Any

import yaml

from .helmlib import CHART, RELEASE, load_values, render

CI = CHART / "ci"


def _containers(rendered: Any, component: str) -> dict[str, dict[str, Any]]:
    pod = rendered.component("Deployment", component)["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def test_gpu_scenario_requests_gpus_and_places_experts(helm: Any) -> None:
    rendered = render(helm, load_values(CI / "gpu-values.yaml"))
    enc = _containers(rendered, "encoder")["encoder"]
    assert enc["image"] == "registry.internal/ocrstream/ocrstream-encoder-cuda:0.1.0-ci"
    assert enc["resources"]["limits"]["nvidia.com/gpu"] == "1"
    dec_pod = rendered.component("Deployment", "decoder")["spec"]["template"]["spec"]
    assert dec_pod["runtimeClassName"] == "nvidia"
    triton = _containers(rendered, "decoder")["triton"]
    assert triton["image"] == "registry.internal/ocrstream/ocrstream-decoder:0.1.0-ci"
    assert triton["command"] == ["tritonserver"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "2"
    shm = next(v for v in dec_pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    consumer = _containers(rendered, "decoder")["consumer"]
    env = {e["name"]: e.get("value") for e in consumer["env"]}
    assert (env["OCRSTREAM_DECODER_BACKEND"], env["OCRSTREAM_DECODER_TRITON_URL"]) == (
        "triton",
        "localhost:8001",
    )
    assert "nvidia.com/gpu" not in consumer["resources"].get("limits", {})
    assert {e["name"]: e["value"] for e in triton["env"] if "value" in e}["OCRSTREAM_DEVICE"] == "cuda"

    # The repository is written at start for 8 shards and the ConfigMap store.
    (init,) = dec_pod["initContainers"]
    assert init["command"][:4] == ["python3", "-m", "ocrstream.serving.repo", "/models"]
    assert "--shards=8" in init["command"]
    assert f"--placement-store=configmap:ocr/{RELEASE}-ocrstream-decoder-placement" in init["command"]
    assert "--model-repository=/models" in triton["args"]
    assert dec_pod["serviceAccountName"] == f"{RELEASE}-ocrstream-decoder"
    role = rendered.component("Role", "decoder-placement")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [f"{RELEASE}-ocrstream-decoder-placement"],
            "verbs": ["get", "patch"],
        }
    ]
    cm = rendered.component("ConfigMap", "decoder-placement")["data"]
    assert cm["active"] == "1"
    placement = json.loads(cm["placement-1.json"])
    assert (placement["version"], placement["n_experts"]) == (1, 64)
    assert sorted(int(k) for k in placement["layers"]) == list(range(1, 12))
    shards = placement["layers"][str(random.randint(1, 11))]
    assert len(shards) == 8
    e = random.randrange(64)
    assert e in shards[e % 8], "strided: expert e on shard e mod 8"
    assert sorted(x for s in shards for x in s) == list(range(64))


def test_contiguous_placement_store(helm: Any) -> None:
    count, shards = random.choice([(64, 4), (64, 16), (12, 3), (8, 8)])
    layers = sorted(random.sample(range(1, 30), 3))
    overrides = {
        "decoder": {"experts": {"count": count, "shards": shards, "store": "configmap", "moeLayers": layers}}
    }
    rendered = render(helm, load_values(CI / "default-values.yaml", overrides=overrides))
    placement = json.loads(rendered.component("ConfigMap", "decoder-placement")["data"]["placement-1.json"])
    per = count // shards
    assert set(placement["layers"]) == {str(x) for x in layers}
    for per_shard in placement["layers"].values():
        assert per_shard == [list(range(i * per, (i + 1) * per)) for i in range(shards)]


def test_static_placement_has_no_store_and_no_api_access(helm: Any) -> None:
    rendered = render(helm, load_values(CI / "default-values.yaml"))
    assert [o for o in rendered.objects if "placement" in o["metadata"]["name"]] == []
    assert rendered.kind("Role") == [] and rendered.kind("RoleBinding") == []
    pod = rendered.component("Deployment", "decoder")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert not any(a.startswith("--placement-store") for a in pod["initContainers"][0]["command"])


def test_dev_infra_points_services_at_in_cluster_backends(helm: Any) -> None:
    rendered = render(helm, load_values(CI / "dev-infra-values.yaml"))
    prefix = f"{RELEASE}-ocrstream"
    cm = rendered.component("ConfigMap", "config")["data"]
    assert cm["OCRSTREAM_KAFKA_BOOTSTRAP"] == f"{prefix}-kafka:9092"
    assert (cm["OCRSTREAM_S3_ENDPOINT"], cm["OCRSTREAM_S3_SECURE"]) == (f"{prefix}-minio:9000", "false")
    assert cm["OCRSTREAM_OTLP_ENDPOINT"] == f"http://{prefix}-otel-collector:4318"
    secret = rendered.component("Secret", "credentials")["stringData"]
    assert secret["redis-url"] == f"redis://{prefix}-redis:6379/0"
    minio = rendered.component("Secret", "minio")["stringData"]
    assert (secret["s3-access-key"], secret["s3-secret-key"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    so = rendered.component("ScaledObject", "encoder")
    assert so["spec"]["triggers"][0]["metadata"]["bootstrapServers"] == f"{prefix}-kafka:9092"
    kafka = rendered.component("StatefulSet", "kafka")
    env = {e["name"]: e["value"] for e in kafka["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{prefix}-kafka:9092"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # partitions come from the topics Job
    job = rendered.component("Job", "topics")
    values = load_values(CHART / "values.yaml")
    assert _topic_layout(job) == _expected_layout(values, "ocrstream.")
    assert _job_env(job)["OCRSTREAM_TOPICS_REPLICATION_FACTOR"] == "1"  # the one dev broker
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    collector = yaml.safe_load(rendered.component("ConfigMap", "otel-collector")["data"]["collector.yaml"])
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    for pipeline in ("traces", "metrics", "logs"):
        assert collector["service"]["pipelines"][pipeline]["processors"] == ["memory_limiter", "batch"]
        assert collector["service"]["pipelines"][pipeline]["exporters"] == ["debug"]
    np = rendered.component("NetworkPolicy", "otel-collector")
    assert {p["port"] for p in np["spec"]["ingress"][0]["ports"]} == {4317, 4318}


def test_production_scenario_has_no_dev_infra(helm: Any) -> None:
    rendered = render(helm, load_values(CI / "default-values.yaml"))
    components = {o["metadata"]["labels"]["app.kubernetes.io/component"] for o in rendered.objects}
    assert not components & {"kafka", "redis", "minio", "otel-collector"}
    assert rendered.kind("StatefulSet") == []
    # The services never create topics: the topics Job does, before them (pre-install), replicated.
    (job,) = rendered.kind("Job")
    values = load_values(CHART / "values.yaml", CI / "default-values.yaml")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    env = _job_env(job)
    assert env["OCRSTREAM_TOPICS_REPLICATION_FACTOR"] == str(
        values["kafka"]["createTopics"]["replicationFactor"]
    )
    assert env["OCRSTREAM_KAFKA_BOOTSTRAP"] == values["kafka"]["bootstrap"]
    assert _topic_layout(job) == _expected_layout(values, values["kafka"]["topicPrefix"])
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert pod["containers"][0]["image"].split(":")[0] == "ocrstream-ingest"


def test_topics_job_can_be_left_to_an_operator(helm: Any) -> None:
    values = load_values(
        CI / "default-values.yaml", overrides={"kafka": {"createTopics": {"enabled": False}}}
    )
    assert render(helm, values).kind("Job") == []


def _job_env(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def _topic_layout(job: dict[str, Any]) -> dict[str, int]:
    """What `ocrstream topics create` makes of the Job's command and environment."""
    from ocrstream.config import CommonConfig, TopicsConfig
    from ocrstream.services.wiring import topic_layout

    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][:3] == ["ocrstream", "topics", "create"]
    env = _job_env(job)
    return topic_layout(CommonConfig.from_env(env).topic_prefix, TopicsConfig.from_env(env))


def _expected_layout(values: dict[str, Any], prefix: str) -> dict[str, int]:
    names = {
        "references": "document.refs",
        "submitted": "document.submitted",
        "rasterized": "page.rasterized",
        "encoded": "page.encoded",
        "decoded": "page.decoded",
        "completed": "document.completed",
        "deadletter": "dead-letter",
    }
    return {prefix + names[k]: t["partitions"] for k, t in values["kafka"]["topics"].items()}


def test_external_secrets_scenario(helm: Any) -> None:
    rendered = render(helm, load_values(CI / "external-secrets-values.yaml"))
    assert rendered.kind("Secret") == [], "all credentials come from existing Secrets"
    env = {e["name"]: e for e in _containers(rendered, "rasterizer")["rasterizer"]["env"]}
    assert env["OCRSTREAM_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "ocrstream-s3",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    assert env["OCRSTREAM_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "ocrstream-redis",
        "key": "url",
    }
    so = rendered.component("ScaledObject", "decoder")
    assert so["spec"]["triggers"][0]["authenticationRef"] == {"name": "ocrstream-kafka-sasl"}
    np = rendered.component("NetworkPolicy", "encoder")
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert np["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert {"port": 9093, "protocol": "TCP"} in np["spec"]["egress"][2]["ports"]
    ingest_np = rendered.component("NetworkPolicy", "ingest")
    assert ingest_np["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "gateway"
    }
    (sm,) = rendered.kind("ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert {e["port"] for e in sm["spec"]["endpoints"]} == {"metrics", "http", "triton-metrics"}
    cm = rendered.component("ConfigMap", "config")["data"]
    assert cm["OCRSTREAM_OTLP_ENDPOINT"] == "http://otel-gateway.observability.svc:4318"


def test_hpa_fallback_scenario(helm: Any) -> None:
    rendered = render(helm, load_values(CI / "hpa-values.yaml"))
    assert rendered.kind("ScaledObject") == []
    names = sorted(h["metadata"]["name"] for h in rendered.kind("HorizontalPodAutoscaler"))
    assert names == sorted(
        f"{RELEASE}-ocrstream-{c}" for c in ("ingest", "rasterizer", "encoder", "decoder", "assembler")
    )
    hpa = rendered.component("HorizontalPodAutoscaler", "decoder")
    cpu = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Resource")
    assert cpu["resource"]["target"]["averageUtilization"] == 60
    ext = next(m for m in hpa["spec"]["metrics"] if m["type"] == "External")
    assert ext["external"]["target"] == {"type": "AverageValue", "averageValue": "8"}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
