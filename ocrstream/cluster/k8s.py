"""The only module that talks to the Kubernetes API: reads the release's Deployments, KEDA
ScaledObjects and HPAs and returns plain dicts for ``ocrstream.cluster.status``.

The converters (``deployment_to_dict`` and friends) are pure, so they are tested on the client's own
model objects without a cluster.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

PART_OF = "app.kubernetes.io/part-of=ocrstream"
COMPONENT = "app.kubernetes.io/component"
KEDA = ("keda.sh", "v1alpha1", "scaledobjects")


class ClusterError(RuntimeError):
    """The Kubernetes API cannot be reached or configured."""


def selector(release: str | None) -> str:
    return PART_OF + (f",app.kubernetes.io/instance={release}" if release else "")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def deployment_to_dict(dep: Any) -> dict[str, Any]:
    """A V1Deployment as the workload dict status.assess expects."""
    meta, spec, st = dep.metadata, dep.spec, dep.status
    ann = meta.annotations or {}
    return {
        "name": meta.name,
        "component": (meta.labels or {}).get(COMPONENT, meta.name),
        "desired": spec.replicas if spec.replicas is not None else 1,
        "ready": (st.ready_replicas if st else None) or 0,
        "available": (st.available_replicas if st else None) or 0,
        "consumer_group": ann.get("ocrstream.io/consumer-group"),
        "input_topic": ann.get("ocrstream.io/input-topic"),
        "partitions": _int(ann.get("ocrstream.io/partitions")),
        "lag_threshold": _int(ann.get("ocrstream.io/lag-threshold")),
    }


def _conditions(items: list[Any] | None) -> dict[str, dict[str, str]]:
    out = {}
    for c in items or []:
        get = c.get if isinstance(c, dict) else lambda k, c=c: getattr(c, k, None)
        out[get("type")] = {
            "status": get("status"),
            "reason": get("reason") or "",
            "message": get("message") or "",
        }
    return out


def scaled_object_to_dict(obj: dict[str, Any]) -> dict[str, Any]:
    """A ScaledObject (custom-objects API dict) as a scaler dict."""
    spec, st = obj.get("spec", {}), obj.get("status", {}) or {}
    kafka = next((t for t in spec.get("triggers", []) if t.get("type") == "kafka"), {})
    meta = kafka.get("metadata", {})
    return {
        "kind": "ScaledObject",
        "name": obj["metadata"]["name"],
        "target": spec.get("scaleTargetRef", {}).get("name"),
        # KEDA's documented defaults when the fields are unset.
        "min": spec.get("minReplicaCount", 0),
        "max": spec.get("maxReplicaCount", 100),
        "current": None,
        "desired": None,
        "hpa_name": st.get("hpaName"),
        "consumer_group": meta.get("consumerGroup"),
        "topic": meta.get("topic"),
        "lag_threshold": _int(meta.get("lagThreshold")),
        "conditions": _conditions(st.get("conditions")),
    }


def hpa_to_dict(hpa: Any) -> dict[str, Any]:
    """A V2HorizontalPodAutoscaler as a scaler dict (lag threshold from an external AverageValue metric)."""
    spec, st = hpa.spec, hpa.status
    threshold = None
    for m in spec.metrics or []:
        if m.type == "External" and m.external and m.external.target.average_value is not None:
            threshold = _int(str(m.external.target.average_value))
    return {
        "kind": "HorizontalPodAutoscaler",
        "name": hpa.metadata.name,
        "target": spec.scale_target_ref.name,
        "min": spec.min_replicas if spec.min_replicas is not None else 1,
        "max": spec.max_replicas,
        "current": st.current_replicas if st else None,
        "desired": st.desired_replicas if st else None,
        "lag_threshold": threshold,
        "conditions": _conditions(st.conditions if st else None),
        "owned_by_keda": (hpa.metadata.labels or {}).get("app.kubernetes.io/managed-by") == "keda-operator"
        or hpa.metadata.name.startswith("keda-hpa-"),
    }


def merge_scalers(scaled_objects: list[dict[str, Any]], hpas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ScaledObjects take current/desired from the HPA KEDA made for them; that HPA is not listed twice."""
    by_name = {h["name"]: h for h in hpas}
    used = set()
    for so in scaled_objects:
        hpa = by_name.get(so.get("hpa_name") or f"keda-hpa-{so['name']}")
        if hpa:
            so["current"], so["desired"] = hpa["current"], hpa["desired"]
            used.add(hpa["name"])
    return scaled_objects + [h for h in hpas if h["name"] not in used and not h["owned_by_keda"]]


class ClusterReader:
    """Reads one namespace. `api_client` defaults to the kubeconfig (file, context) or in-cluster config."""

    def __init__(
        self,
        namespace: str,
        *,
        context: str | None = None,
        kubeconfig: str | None = None,
        api_client: Any = None,
    ) -> None:
        import os

        from kubernetes import client, config

        if api_client is None:
            try:
                # KUBECONFIG is read here, not at the client's import time, so a changed env is honoured.
                config.load_kube_config(
                    config_file=kubeconfig or os.environ.get("KUBECONFIG"), context=context
                )
            except config.ConfigException as kube_exc:
                try:
                    config.load_incluster_config()
                except config.ConfigException as incluster_exc:
                    raise ClusterError(
                        f"no usable kubeconfig (context={context!r}: {kube_exc}) and not in a cluster ({incluster_exc})"
                    ) from kube_exc
            api_client = client.ApiClient()
        self.namespace = namespace
        self._apps = client.AppsV1Api(api_client)
        self._autoscaling = client.AutoscalingV2Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    def workloads(self, release: str | None = None) -> list[dict[str, Any]]:
        deps = self._apps.list_namespaced_deployment(self.namespace, label_selector=selector(release))
        return [deployment_to_dict(d) for d in deps.items]

    def scalers(self, release: str | None = None) -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        try:
            objs = self._custom.list_namespaced_custom_object(
                *KEDA[:2], self.namespace, KEDA[2], label_selector=selector(release)
            )["items"]
        except ApiException as exc:
            if exc.status != 404:
                raise
            log.info("no KEDA ScaledObject API in the cluster; HPAs only")
            objs = []
        # KEDA's own HPAs do not carry the chart's labels: list them all and pair by name.
        hpas = self._autoscaling.list_namespaced_horizontal_pod_autoscaler(self.namespace).items
        return merge_scalers([scaled_object_to_dict(o) for o in objs], [hpa_to_dict(h) for h in hpas])

    def kafka_bootstrap(self, release: str | None = None) -> str | None:
        """The bootstrap the release's services use (from the chart's shared ConfigMap)."""
        cms = self._core.list_namespaced_config_map(
            self.namespace, label_selector=selector(release) + f",{COMPONENT}=config"
        )
        for cm in cms.items:
            value = (cm.data or {}).get("OCRSTREAM_KAFKA_BOOTSTRAP")
            if value:
                return value
        return None
