"""ocrstream.cluster.k8s through the real kubernetes client against a stand-in API server that serves
the chart's own rendered objects (plus the status fields a cluster would add)."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from kubernetes import client

from ocrstream.cli import main
from ocrstream.cluster import k8s
from ocrstream.cluster.status import Verdict

NS = "ocr"


def _with_status(
    objs: dict[str, list[dict[str, Any]]], ready: dict[str, int], keda_hpas: bool = True
) -> dict[str, list]:
    deployments = []
    for d in copy.deepcopy(objs["Deployment"]):
        component = d["metadata"]["labels"]["app.kubernetes.io/component"]
        n = ready.get(component, 1)
        d["spec"]["replicas"] = n + 1 if component == "decoder" else n  # the decoder is one pod short
        d["status"] = {"replicas": d["spec"]["replicas"], "readyReplicas": n, "availableReplicas": n}
        deployments.append(d)
    scaled, hpas = [], []
    for so in copy.deepcopy(objs.get("ScaledObject", [])):
        name = so["metadata"]["name"]
        so["status"] = {
            "hpaName": f"keda-hpa-{name}",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "ScaledObjectReady"},
                {"type": "Active", "status": "True" if name.endswith("decoder") else "False"},
                {"type": "Fallback", "status": "False"},
            ],
        }
        scaled.append(so)
        if keda_hpas:
            hpas.append(
                {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": {
                        "name": f"keda-hpa-{name}",
                        "labels": {"app.kubernetes.io/managed-by": "keda-operator"},
                    },
                    "spec": {
                        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                        "minReplicas": so["spec"]["minReplicaCount"],
                        "maxReplicas": so["spec"]["maxReplicaCount"],
                        "metrics": [
                            {
                                "type": "External",
                                "external": {
                                    "metric": {"name": "s0-kafka-topic"},
                                    "target": {"type": "AverageValue", "averageValue": "20"},
                                },
                            }
                        ],
                    },
                    "status": {"currentReplicas": 3, "desiredReplicas": 4, "conditions": []},
                }
            )
    for h in copy.deepcopy(objs.get("HorizontalPodAutoscaler", [])):
        h["status"] = {
            "currentReplicas": 2,
            "desiredReplicas": 2,
            "conditions": [{"type": "ScalingActive", "status": "True"}],
        }
        hpas.append(h)
    return {
        f"/apis/apps/v1/namespaces/{NS}/deployments": deployments,
        f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects": scaled,
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers": hpas,
        f"/api/v1/namespaces/{NS}/configmaps": objs["ConfigMap"],
    }


def _reader(api: Any) -> k8s.ClusterReader:
    return k8s.ClusterReader(NS, api_client=client.ApiClient(client.Configuration(host=api.url)))


def test_reader_pairs_chart_objects(fake_api: Any, chart_objects: dict) -> None:
    ready = {c: random.randint(1, 4) for c in ("ingest", "rasterizer", "encoder", "decoder", "assembler")}
    fake_api.lists = _with_status(chart_objects, ready)
    reader = _reader(fake_api)

    workloads = {w["component"]: w for w in reader.workloads("rel")}
    assert set(workloads) == set(ready)
    enc = workloads["encoder"]
    assert (enc["ready"], enc["desired"]) == (ready["encoder"], ready["encoder"])
    assert (enc["consumer_group"], enc["input_topic"], enc["partitions"], enc["lag_threshold"]) == (
        "ocrstream.encode",
        "ocrstream.page.rasterized",
        24,
        20,
    )
    assert workloads["decoder"]["desired"] == ready["decoder"] + 1
    assert workloads["ingest"]["consumer_group"] == "ocrstream.ingest-refs"

    scalers = {s["target"]: s for s in reader.scalers("rel")}
    so = scalers["rel-ocrstream-decoder"]
    assert (so["kind"], so["min"], so["max"], so["lag_threshold"]) == ("ScaledObject", 1, 4, 8)
    assert (so["consumer_group"], so["topic"]) == ("ocrstream.decode", "ocrstream.page.encoded")
    assert (so["current"], so["desired"]) == (3, 4), "taken from the HPA KEDA made"
    assert so["conditions"]["Active"]["status"] == "True"
    assert scalers["rel-ocrstream-ingest"]["kind"] == "HorizontalPodAutoscaler"
    assert not any(s["name"].startswith("keda-hpa-") for s in scalers.values()), (
        "KEDA's HPAs not listed twice"
    )

    assert reader.kafka_bootstrap("rel") == "kafka-0.kafka.data.svc:9092,kafka-1.kafka.data.svc:9092"
    selectors = {path.rsplit("/", 1)[1]: sel for path, sel in fake_api.requests}
    assert selectors["deployments"] == "app.kubernetes.io/part-of=ocrstream,app.kubernetes.io/instance=rel"
    assert selectors["configmaps"].endswith(",app.kubernetes.io/component=config")


def test_reader_without_keda_api(fake_api: Any, chart_objects: dict) -> None:
    lists = _with_status(chart_objects, {})
    del lists[f"/apis/keda.sh/v1alpha1/namespaces/{NS}/scaledobjects"]  # CRD not installed: 404
    fake_api.lists = lists
    scalers = _reader(fake_api).scalers()
    assert [s["kind"] for s in scalers] == ["HorizontalPodAutoscaler"]


def test_hpa_converter_reads_lag_threshold() -> None:
    hpa = client.V2HorizontalPodAutoscaler(
        metadata=client.V1ObjectMeta(name="rel-ocrstream-encoder"),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(
                kind="Deployment", name="rel-ocrstream-encoder"
            ),
            min_replicas=2,
            max_replicas=9,
            metrics=[
                client.V2MetricSpec(
                    type="External",
                    external=client.V2ExternalMetricSource(
                        metric=client.V2MetricIdentifier(name="kafka_consumergroup_lag"),
                        target=client.V2MetricTarget(type="AverageValue", average_value="35"),
                    ),
                )
            ],
        ),
        status=client.V2HorizontalPodAutoscalerStatus(current_replicas=5, desired_replicas=7),
    )
    d = k8s.hpa_to_dict(hpa)
    assert (d["min"], d["max"], d["current"], d["desired"], d["lag_threshold"]) == (2, 9, 5, 7, 35)
    assert d["owned_by_keda"] is False


def test_cli_end_to_end_without_kafka(
    fake_api: Any, chart_objects: dict, tmp_path: Any, monkeypatch: Any, capsys: Any
) -> None:
    fake_api.lists = _with_status(chart_objects, {"encoder": 2, "decoder": 1})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": fake_api.url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": NS}}],
                "current-context": "fake",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # A closed port: lag cannot be read, which must show as "unknown", never as keeping up.
    rc = main(
        [
            "cluster",
            "status",
            "-n",
            NS,
            "--bootstrap",
            "127.0.0.1:1",
            "--kafka-timeout",
            "1",
            "--json",
            "--check",
        ]
    )
    captured = capsys.readouterr()
    assert captured.out, captured.err
    out = json.loads(captured.out)
    assert rc == 1 and out["keeping_up"] is False
    rows = {r["component"]: r for r in out["services"]}
    assert rows["encoder"]["scaler"] == "keda 1-12 inactive"
    assert rows["decoder"]["scaler"] == "keda 1-4 active"
    assert (rows["decoder"]["ready"], rows["decoder"]["desired"]) == (1, 2)
    assert rows["decoder"]["verdict"] == Verdict.UNKNOWN.value
    assert "127.0.0.1:1" in rows["decoder"]["reason"]
    assert rows["ingest"]["scaler"] == "hpa 2-6 cur=2 want=2"


@pytest.mark.parametrize("bad", ["empty-namespace", "forbidden-namespace"])
def test_cli_reports_missing_workloads(
    fake_api: Any, chart_objects: dict, tmp_path: Any, monkeypatch: Any, capsys: Any, bad: str
) -> None:
    # An empty namespace lists no Deployments; a path the server does not serve answers 404.
    fake_api.lists = {
        "/apis/apps/v1/namespaces/empty-namespace/deployments": [],
        "/apis/autoscaling/v2/namespaces/empty-namespace/horizontalpodautoscalers": [],
        "/api/v1/namespaces/empty-namespace/configmaps": [],
    }
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": fake_api.url}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}],
                "current-context": "fake",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    rc = main(["cluster", "status", "-n", bad, "--kubeconfig", str(kubeconfig)])
    err = capsys.readouterr().err
    assert rc == 2 and bad in err
    if bad == "empty-namespace":
        assert "no ocrstream Deployments" in err
    else:
        assert "cannot read namespace" in err and "404" in err
