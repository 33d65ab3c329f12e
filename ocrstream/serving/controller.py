"""Rebalancing: plan a placement from observed expert load and move the shards to it without
dropping requests.

Sequence (each step safe while pages decode):
1. ``plan`` the new placement from the counts and ``put`` it in the store (not active yet);
2. reload every shard with ``placement_versions = old,new`` (explicit model control with a config
   override): Triton swaps each shard only once its new instance is ready, and that instance holds
   the union, so requests routed by either placement are served;
3. ``set_active(new)``: the decoder switches between two steps (``ShardedExperts.between_steps``);
4. once the decoder reports the new version (its ``ocrstream_placement_version`` gauge), reload the
   shards with ``placement_versions = new`` to drop the experts they no longer serve.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ocrstream.serving import eplb
from ocrstream.serving.metrics import PLACEMENT_VERSION, parse_counts, parse_gauge
from ocrstream.serving.placement import Placement, PlacementStore

log = logging.getLogger(__name__)


class RebalanceError(RuntimeError):
    pass


@dataclass
class RebalanceReport:
    old: Placement
    new: Placement
    before: float  # max/mean shard load of the old placement on the counts
    after: float
    seconds: float


def scrape(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - our own metrics endpoint
        return resp.read().decode()


def reload_shard(client, name: str, versions: Sequence[int]) -> None:  # noqa: ANN001 - tritonclient grpc/http
    cfg = client.get_model_config(name, as_json=True)
    cfg = cfg.get("config", cfg)
    params = cfg.setdefault("parameters", {})
    params["placement_versions"] = {"string_value": ",".join(str(v) for v in versions)}
    client.load_model(name, config=json.dumps(cfg))
    if not client.is_model_ready(name):
        raise RebalanceError(
            f"shard model {name} not ready after reload with placement versions {list(versions)}"
        )


def rebalance(
    client,  # noqa: ANN001
    store: PlacementStore,
    shard_names: Sequence[str],
    counts: Mapping[int, Sequence[float]],
    metrics_url: str = "",
    slots_per_shard: int | None = None,
    switch_timeout_s: float = 60.0,
) -> RebalanceReport:
    t0 = time.monotonic()
    old = store.get(store.active_version())
    if len(shard_names) != old.n_shards:
        raise RebalanceError(f"{len(shard_names)} shard models for a {old.n_shards}-shard placement")
    new = eplb.plan(counts, old.n_shards, slots_per_shard, version=old.version + 1, current=old)
    store.put(new)
    for name in shard_names:
        reload_shard(client, name, [old.version, new.version])
    store.set_active(new.version)
    if metrics_url:
        deadline = time.monotonic() + switch_timeout_s
        while parse_gauge(scrape(metrics_url), PLACEMENT_VERSION) != new.version:
            if time.monotonic() > deadline:
                raise RebalanceError(
                    f"decoder did not switch to placement {new.version} in {switch_timeout_s:.0f}s"
                )
            time.sleep(0.05)
        for name in shard_names:
            reload_shard(client, name, [new.version])
    else:
        log.warning(
            "no decoder metrics URL: shards keep the union of versions %d and %d", old.version, new.version
        )
    rep = RebalanceReport(
        old, new, eplb.imbalance(old, counts), eplb.imbalance(new, counts), time.monotonic() - t0
    )
    log.info(
        "rebalanced placement %d -> %d: max/mean %.3f -> %.3f in %.1fs",
        old.version,
        new.version,
        rep.before,
        rep.after,
        rep.seconds,
    )
    return rep


def observed_counts(metrics_url: str, n_experts: int) -> dict[int, list[int]]:
    return parse_counts(scrape(metrics_url), n_experts)
