"""Placement kept in a Kubernetes ConfigMap (cluster mode), through the official kubernetes client;
``open_store`` picks the placement store a spec names (a ConfigMap or a folder).

Keys: ``placement-<version>.json`` per version and ``active`` (the version the decoder follows). The
ConfigMap is created on first write. This is the only module that talks to the Kubernetes API.
"""

from __future__ import annotations

import logging

from ocrstream.serving.placement import FilePlacementStore, Placement, PlacementError, PlacementStore

log = logging.getLogger(__name__)


class ConfigMapPlacementStore:
    def __init__(self, namespace: str, name: str, api: object | None = None) -> None:
        self.namespace, self.name = namespace, name
        if api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api = client.CoreV1Api()
        self.api = api

    def _data(self) -> dict[str, str]:
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self.api.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise PlacementError(f"cannot read ConfigMap {self.namespace}/{self.name}: {exc.reason}") from exc
        return dict(cm.data or {})

    def _patch(self, data: dict[str, str]) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.patch_namespaced_config_map(self.name, self.namespace, {"data": data})
        except ApiException as exc:
            if exc.status != 404:
                raise PlacementError(
                    f"cannot write ConfigMap {self.namespace}/{self.name}: {exc.reason}"
                ) from exc
            body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=self.name), data=data)
            self.api.create_namespaced_config_map(self.namespace, body)

    def get(self, version: int) -> Placement:
        raw = self._data().get(f"placement-{version}.json")
        if raw is None:
            raise PlacementError(f"placement version {version} not in ConfigMap {self.namespace}/{self.name}")
        return Placement.from_json(raw)

    def put(self, placement: Placement) -> None:
        placement.validate()
        self._patch({f"placement-{placement.version}.json": placement.to_json()})

    def active_version(self) -> int:
        raw = self._data().get("active")
        if raw is None:
            raise PlacementError(f"no 'active' key in ConfigMap {self.namespace}/{self.name}")
        return int(raw)

    def set_active(self, version: int) -> None:
        self.get(version)
        self._patch({"active": str(version)})
        log.info("placement version %d active in ConfigMap %s/%s", version, self.namespace, self.name)


def open_store(spec: str) -> PlacementStore:
    """``configmap:<namespace>/<name>`` (Kubernetes) or a folder path (embedded)."""
    if spec.startswith("configmap:"):
        ns, _, name = spec.removeprefix("configmap:").partition("/")
        if not ns or not name:
            raise PlacementError(f"placement store {spec!r}: expected configmap:<namespace>/<name>")
        return ConfigMapPlacementStore(ns, name)
    if not spec:
        raise PlacementError("empty placement store spec")
    return FilePlacementStore(spec)
