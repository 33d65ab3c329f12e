"""EPLB-style placement planner (pure functions): replicate hot experts, pack to balance shards.

Follows the idea of DeepSeek's expert-parallel load balancer: per MoE layer, (1) give the extra
slots to the experts with the highest load per replica, one at a time; (2) place replicas, heaviest
first, on the least-loaded shard that has a free slot and does not already hold that expert. The
objective is the most loaded shard for the observed token counts; replicas of an expert share its
tokens evenly (the decoder splits them that way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ocrstream.serving.placement import Placement, PlacementError


def layer_loads(per_shard: Sequence[Sequence[int]], counts: Sequence[float]) -> np.ndarray:
    """Expected tokens per shard of one layer when each expert's tokens split evenly over its replicas."""
    c = np.asarray(counts, dtype=np.float64)
    n_replicas = np.zeros(len(c))
    for experts in per_shard:
        n_replicas[list(experts)] += 1
    return np.array([sum(c[e] / n_replicas[e] for e in experts) for experts in per_shard])


def shard_loads(placement: Placement, counts: Mapping[int, Sequence[float]]) -> dict[int, np.ndarray]:
    """Layer -> expected tokens per shard (``layer_loads`` for every layer of the placement)."""
    return {layer: layer_loads(per, counts[layer]) for layer, per in placement.layers.items()}


def imbalance(placement: Placement, counts: Mapping[int, Sequence[float]]) -> float:
    """Sum over layers of the most loaded shard / sum of the mean shard load (1.0 = perfect balance).

    Per layer, not on summed loads: every MoE layer's all-to-all waits for its slowest shard, so a
    shard that is hot in layer 1 and cold in layer 2 still costs a step in both.
    """
    loads = shard_loads(placement, counts)
    worst = sum(float(v.max()) for v in loads.values())
    mean = sum(float(v.mean()) for v in loads.values())
    return worst / mean if mean > 0 else 1.0


def plan_layer(counts: Sequence[float], n_shards: int, slots: int) -> tuple[tuple[int, ...], ...]:
    """One layer: ``counts[e]`` observed tokens, ``slots`` experts per shard -> experts per shard."""
    c = np.asarray(counts, dtype=np.float64)
    n_experts = len(c)
    if n_shards * slots < n_experts:
        raise PlacementError(f"{n_shards} shards x {slots} slots cannot hold {n_experts} experts")
    if slots > n_experts:
        raise PlacementError(f"{slots} slots per shard exceed {n_experts} experts (a shard holds each once)")
    # A tiny floor keeps never-seen experts ordered and placed.
    c = np.maximum(c, 1e-9)
    replicas = np.ones(n_experts, dtype=np.int64)
    for _ in range(n_shards * slots - n_experts):
        per = c / replicas
        order = np.argsort(-per, kind="stable")
        for e in order:  # an expert can have at most one replica per shard
            if replicas[e] < n_shards:
                replicas[e] += 1
                break
    items = [(c[e] / replicas[e], e) for e in range(n_experts) for _ in range(replicas[e])]
    items.sort(key=lambda t: (-t[0], t[1]))
    load = np.zeros(n_shards)
    held: list[list[int]] = [[] for _ in range(n_shards)]
    for w, e in items:
        choices = [s for s in range(n_shards) if len(held[s]) < slots and e not in held[s]]
        if not choices:
            raise PlacementError(f"packing failed for expert {e} (replicas {replicas.tolist()})")
        s = min(choices, key=lambda s: (load[s], len(held[s]), s))
        held[s].append(e)
        load[s] += w
    return tuple(tuple(sorted(h)) for h in held)


def _better(layer, planned, current, counts, n_shards):  # noqa: ANN001, ANN202
    """The planned layer unless the current one's most loaded shard is no heavier for these counts."""
    if layer not in current.layers or current.n_shards != n_shards:
        return planned
    keep = current.layers[layer]
    return (
        keep
        if layer_loads(keep, counts[layer]).max() <= layer_loads(planned, counts[layer]).max()
        else planned
    )


def plan(
    counts: Mapping[int, Sequence[float]],
    n_shards: int,
    slots_per_shard: int | None = None,
    version: int = 1,
    current: Placement | None = None,
) -> Placement:
    """A placement for every layer in ``counts`` (layer -> tokens per expert).

    ``slots_per_shard`` defaults to ceil(E / K) + 1: one spare slot per shard for a hot replica.
    With ``current``, a layer keeps its current experts unless the new plan lowers its most loaded
    shard: the greedy packing is a heuristic and, on near-uniform load, can come out slightly worse
    than what is already serving, and moving weights for no gain is pure cost.
    """
    if not counts:
        raise PlacementError("no load counts to plan from")
    n_experts = {len(v) for v in counts.values()}
    if len(n_experts) != 1:
        raise PlacementError(f"layers report different expert counts {sorted(n_experts)}")
    (e,) = n_experts
    slots = slots_per_shard if slots_per_shard is not None else min(e, -(-e // n_shards) + 1)
    layers = {int(layer): plan_layer(c, n_shards, slots) for layer, c in counts.items()}
    if current is not None:
        layers = {layer: _better(layer, per, current, counts, n_shards) for layer, per in layers.items()}
    p = Placement(version, e, layers)
    p.validate()
    return p
