"""Bad values are refused before anything reaches a cluster: types by values.schema.json, cross-field
rules by templates/_validate.tpl, which lists every problem in one failure."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import pytest
import yaml

from .helmlib import CHART, load_values, render

CI = CHART / "ci"


def _render_error(helm: Any, overrides: dict[str, Any]) -> str:
    values = load_values(CI / "default-values.yaml", overrides=overrides)
    with pytest.raises(helm.HelmError) as exc:
        render(helm, values)
    return str(exc.value)


def test_values_yaml_and_scenarios_satisfy_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert list(validator.iter_errors(defaults)) == []
    from .helmlib import deep_merge

    for f in sorted(CI.glob("*-values.yaml")):
        merged = deep_merge(defaults, yaml.safe_load(f.read_text()))
        assert [e.message for e in validator.iter_errors(merged)] == [], f.name


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"encoder": {"replicaz": 3}}, "additional properties 'replicaz' not allowed"),
        ({"encoder": {"variant": "tpu"}}, "/encoder/variant"),
        ({"decoder": {"autoscaling": {"maxReplicas": 0}}}, "/decoder/autoscaling/maxReplicas"),
        ({"keda": {"offsetResetPolicy": "newest"}}, "/keda/offsetResetPolicy"),
        ({"kafka": {"bootstrap": "kafka without port"}}, "/kafka/bootstrap"),
        ({"image": {"tag": "latest"}}, "/image/tag"),
        ({"dev": {"kafka": {"image": {"tag": "latest"}}}}, "/dev/kafka/image/tag"),
        ({"kafka": {"topics": {"encoded": {"name": "x"}}}}, "additional properties 'name' not allowed"),
        ({"objectStore": {"endpoint": "http://minio:9000"}}, "/objectStore/endpoint"),
        ({"decoder": {"experts": {"store": "etcd"}}}, "/decoder/experts/store"),
        ({"decoder": {"experts": {"shards": 0}}}, "/decoder/experts/shards"),
    ],
)
def test_schema_rejects(helm: Any, overrides: dict[str, Any], expected: str) -> None:
    message = _render_error(helm, overrides)
    assert "schema" in message and expected in message, message


def test_replica_ceiling_is_the_partition_count(helm: Any) -> None:
    partitions = random.randint(2, 16)
    over = partitions + random.randint(1, 8)
    message = _render_error(
        helm,
        {
            "kafka": {"topics": {"encoded": {"partitions": partitions}}},
            "decoder": {"autoscaling": {"maxReplicas": over}},
        },
    )
    assert (
        f"decoder: autoscaling.maxReplicas={over} exceeds the {partitions} partitions of topic ocrstream.page.encoded "
        "(kafka.topics.encoded.partitions" in message
    )
    # At the ceiling it renders.
    values = load_values(
        CI / "default-values.yaml",
        overrides={
            "kafka": {"topics": {"encoded": {"partitions": partitions}}},
            "decoder": {"autoscaling": {"maxReplicas": partitions}},
        },
    )
    so = render(helm, values).component("ScaledObject", "decoder")
    assert so["spec"]["maxReplicaCount"] == partitions


def test_fixed_replicas_also_respect_partitions(helm: Any) -> None:
    message = _render_error(helm, {"assembler": {"replicas": 13, "autoscaling": {"enabled": False}}})
    assert "assembler: replicas=13 exceeds the 12 partitions of topic ocrstream.page.decoded" in message


def test_all_problems_are_listed_at_once(helm: Any) -> None:
    values = yaml.safe_load((CI / "default-values.yaml").read_text())
    values["kafka"]["bootstrap"] = ""
    values["redis"]["url"] = ""
    values.update(
        {
            "encoder": {"autoscaling": {"maxReplicas": 25, "minReplicas": 26}},
            "decoder": {"experts": {"count": 64, "shards": 6, "store": "configmap", "moeLayers": []}},
        }
    )
    with pytest.raises(helm.HelmError) as exc:
        render(helm, values)
    message = str(exc.value)
    expected = [
        "encoder: autoscaling.maxReplicas=25 exceeds the 24 partitions of topic ocrstream.page.rasterized",
        "encoder: autoscaling.minReplicas=26 is above maxReplicas=25",
        "keda.enabled=true needs kafka.bootstrap",
        "redis.url is required unless redis.existingSecret",
        "decoder.experts.shards=6 does not divide experts.count=64",
        "decoder.experts.store=configmap needs decoder.experts.moeLayers",
    ]
    missing = [e for e in expected if e not in message]
    assert missing == [], message
    assert message.count("ocrstream values are invalid") == 1
    assert message.count("\n  - ") == len(expected)


def test_bootstrap_needed_even_without_keda(helm: Any) -> None:
    message = _render_error(helm, {"kafka": {"bootstrap": ""}, "keda": {"enabled": False}})
    assert "kafka.bootstrap is required" in message and "keda.enabled=true" not in message


def test_dev_enabled_supplies_endpoints(helm: Any) -> None:
    rendered = render(helm, {"dev": {"enabled": True}, "ingest": {"devOpen": True}})
    assert rendered.component("ConfigMap", "config")["data"]["OCRSTREAM_KAFKA_BOOTSTRAP"].endswith(
        "-kafka:9092"
    )
