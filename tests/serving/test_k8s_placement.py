"""The ConfigMap placement store through a stand-in CoreV1Api (the interface the adapter calls)."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from ocrstream.serving.k8s_placement import ConfigMapPlacementStore
from ocrstream.serving.placement import PlacementError, contiguous_placement


class InMemoryCoreV1:
    """Keeps ConfigMaps in a dict and answers like the API server (404 when missing)."""

    def __init__(self) -> None:
        self.maps: dict[tuple[str, str], dict[str, str]] = {}

    def read_namespaced_config_map(self, name, namespace):
        if (namespace, name) not in self.maps:
            raise ApiException(status=404, reason="Not Found")
        data = dict(self.maps[(namespace, name)])
        return type("CM", (), {"data": data})()

    def patch_namespaced_config_map(self, name, namespace, body):
        if (namespace, name) not in self.maps:
            raise ApiException(status=404, reason="Not Found")
        self.maps[(namespace, name)].update(body["data"])

    def create_namespaced_config_map(self, namespace, body):
        self.maps[(namespace, body.metadata.name)] = dict(body.data)


def test_configmap_store_round_trip():
    api = InMemoryCoreV1()
    store = ConfigMapPlacementStore("ocr", "ocrstream-placement", api=api)
    p1 = contiguous_placement(8, [1, 2], 2)
    store.put(p1)  # creates the ConfigMap
    with pytest.raises(PlacementError, match="no 'active' key"):
        store.active_version()
    store.set_active(1)
    p2 = contiguous_placement(8, [1, 2], 2, version=2)
    store.put(p2)
    store.set_active(2)
    assert store.active_version() == 2 and store.get(1) == p1 and store.get(2) == p2
    assert set(api.maps[("ocr", "ocrstream-placement")]) == {"placement-1.json", "placement-2.json", "active"}
    with pytest.raises(PlacementError, match="version 9 not in ConfigMap ocr/ocrstream-placement"):
        store.set_active(9)
