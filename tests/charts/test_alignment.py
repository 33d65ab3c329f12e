"""The chart and the code agree: topic names, consumer groups and environment variables. A rename on
either side fails here instead of silently scaling on a group nobody consumes as."""

from __future__ import annotations

import ast
import re
from typing import Any

import yaml

from ocrstream import config, messages

from .helmlib import CHART, REPO, load_values, render

SERVICES = REPO / "services"


def _chart_map(define: str) -> dict[str, Any]:
    text = (CHART / "templates" / "_helpers.tpl").read_text()
    body = re.search(r'\{\{- define "' + re.escape(define) + r'" -\}\}\n(.*?)\{\{- end -\}\}', text, re.S)
    assert body, define
    return yaml.safe_load(body.group(1))


def _handler_facts(service: str) -> tuple[str, str]:
    """(stage, input message class name) from services/<service>/handler.py, without importing it."""
    tree = ast.parse((SERVICES / service / "handler.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            attrs = {
                t.id: v
                for stmt in node.body
                if isinstance(stmt, ast.Assign)
                for t in stmt.targets
                if isinstance(t, ast.Name)
                for v in [stmt.value]
            }
            if "stage" in attrs and "input_type" in attrs:
                return ast.literal_eval(attrs["stage"]), attrs["input_type"].id
    raise AssertionError(f"no handler class with stage/input_type in services/{service}/handler.py")


def test_topic_names_match_the_messages() -> None:
    suffixes = _chart_map("ocrstream.topicSuffixes")
    code = {
        cls.TOPIC for cls in vars(messages).values() if isinstance(cls, type) and getattr(cls, "TOPIC", "")
    }
    assert set(suffixes.values()) == code


def test_stages_and_inputs_match_the_handlers() -> None:
    stages = _chart_map("ocrstream.stages")
    suffixes = _chart_map("ocrstream.topicSuffixes")
    for component, facts in stages.items():
        stage, input_cls = _handler_facts(component)
        assert facts["stage"] == stage, component
        assert suffixes[facts["input"]] == getattr(messages, input_cls).TOPIC, component


def test_rendered_env_names_are_read_by_the_services(helm: Any) -> None:
    known = {name for name, _, _ in config.env_table()}
    worker = {
        n.replace("<SERVICE>", s.upper())
        for n in known
        if "<SERVICE>" in n
        for s in ("ingest", "rasterizer", "encoder", "decoder", "assembler")
    }
    rendered = render(
        helm,
        load_values(
            CHART / "ci" / "gpu-values.yaml", overrides={"ingest": {"apiKeysSecret": {"name": "keys"}}}
        ),
    )
    names = set(rendered.component("ConfigMap", "config")["data"])
    for d in rendered.kind("Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            names |= {e["name"] for e in c.get("env", []) if e["name"].startswith("OCRSTREAM_")}
    ours = {n for n in names if n.startswith("OCRSTREAM_")}
    assert ours - known - worker == set()
    assert {
        "OCRSTREAM_INGEST_HOST",
        "OCRSTREAM_INGEST_API_KEYS",
        "OCRSTREAM_DECODER_BACKEND",
        "OCRSTREAM_DEVICE",
    } <= ours


def test_group_names_in_the_scalers(helm: Any) -> None:
    rendered = render(helm, load_values(CHART / "ci" / "default-values.yaml"))
    for component in ("rasterizer", "encoder", "decoder", "assembler"):
        stage, input_cls = _handler_facts(component)
        meta = rendered.component("ScaledObject", component)["spec"]["triggers"][0]["metadata"]
        # services/runtime.py: group = f"{topic_prefix}{handler.stage}"; topic = prefix + message TOPIC.
        assert meta["consumerGroup"] == "ocrstream." + stage
        assert meta["topic"] == messages.topic(getattr(messages, input_cls), "ocrstream.")
