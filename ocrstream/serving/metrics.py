"""Expert load accounting: routed tokens per (layer, expert) and per shard, as Prometheus counters.

The decoder model owns one ``ExpertLoad``; ``snapshot()`` gives the counts the EPLB planner takes,
and ``serve(port)`` exposes the registry over HTTP (Triton's own metrics port only carries its
built-in families). ``parse_counts`` reads the counts back from a scrape (the rebalance controller).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

EXPERT_TOKENS = "ocrstream_expert_tokens"
SHARD_TOKENS = "ocrstream_shard_tokens"
DECODE_STEPS = "ocrstream_decoder_steps"
PLACEMENT_VERSION = "ocrstream_placement_version"


class ExpertLoad:
    def __init__(
        self, moe_layers: Iterable[int], n_experts: int, registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.n_experts = n_experts
        self._counts = {int(layer): np.zeros(n_experts, dtype=np.int64) for layer in moe_layers}
        self._lock = threading.Lock()
        self.expert_tokens = Counter(
            EXPERT_TOKENS,
            "routed token assignments per MoE layer and expert",
            ["layer", "expert"],
            registry=self.registry,
        )
        self.shard_tokens = Counter(
            SHARD_TOKENS,
            "routed token assignments sent to each expert shard",
            ["shard"],
            registry=self.registry,
        )
        self.steps = Counter(
            DECODE_STEPS, "batched forward passes (prefill or decode step)", ["kind"], registry=self.registry
        )
        self.placement_version = Gauge(
            PLACEMENT_VERSION,
            "placement version the decoder routes by (0 = experts in the decoder)",
            registry=self.registry,
        )
        self._server = None

    def add(self, layer: int, counts: np.ndarray) -> None:
        with self._lock:
            self._counts[layer] += counts
        for e in np.nonzero(counts)[0].tolist():
            self.expert_tokens.labels(str(layer), str(e)).inc(int(counts[e]))

    def add_shard(self, shard: int, n: int) -> None:
        self.shard_tokens.labels(str(shard)).inc(n)

    def snapshot(self) -> dict[int, list[int]]:
        with self._lock:
            return {layer: c.tolist() for layer, c in self._counts.items()}

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        if port > 0 and self._server is None:
            self._server = start_http_server(port, addr=addr, registry=self.registry)


def parse_counts(text: str, n_experts: int) -> dict[int, list[int]]:
    """Layer -> tokens per expert from a Prometheus text exposition of ``ExpertLoad``."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[int, list[int]] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != EXPERT_TOKENS:
            continue
        for s in fam.samples:
            if s.name != EXPERT_TOKENS + "_total":
                continue
            layer, e = int(s.labels["layer"]), int(s.labels["expert"])
            out.setdefault(layer, [0] * n_experts)[e] = int(s.value)
    return out


def parse_gauge(text: str, name: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        if fam.name == name:
            for s in fam.samples:
                return float(s.value)
    return None
