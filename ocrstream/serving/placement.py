"""Expert placement: which shard holds which routed experts of each MoE layer, and where it is kept.

JSON format (one version per document)::

    {"version": 2, "n_experts": 64, "layers": {"1": [[0, 1, 5], [2, 3, 4, 5]], ...}}

``layers[L][s]`` lists the experts shard ``s`` holds for MoE layer ``L``; an expert listed on several
shards is replicated (EPLB) and its tokens are split between the replicas. Every expert of every MoE
layer must live on at least one shard. Stores keep every version plus an ``active`` pointer: shards
load the versions they are told to, the decoder follows ``active`` between decode steps.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class PlacementError(ValueError):
    """An invalid placement document or store entry (the message names the offending values)."""


@dataclass(frozen=True)
class Placement:
    version: int
    n_experts: int
    layers: dict[int, tuple[tuple[int, ...], ...]]  # MoE layer -> per shard, sorted expert ids

    @property
    def n_shards(self) -> int:
        return len(next(iter(self.layers.values()))) if self.layers else 0

    def experts_on(self, shard: int, layer: int) -> tuple[int, ...]:
        return self.layers[layer][shard]

    def shard_experts(self, shard: int) -> dict[int, tuple[int, ...]]:
        """Layer -> experts held by ``shard``."""
        return {layer: per[shard] for layer, per in self.layers.items()}

    def replicas(self, layer: int) -> list[list[int]]:
        """Expert -> shards holding it, for one layer."""
        out: list[list[int]] = [[] for _ in range(self.n_experts)]
        for s, experts in enumerate(self.layers[layer]):
            for e in experts:
                out[e].append(s)
        return out

    def validate(self) -> None:
        problems = []
        widths = {len(per) for per in self.layers.values()}
        if len(widths) > 1:
            problems.append(f"layers name different shard counts {sorted(widths)}")
        for layer, per in sorted(self.layers.items()):
            held = [e for experts in per for e in experts]
            bad = sorted({e for e in held if not 0 <= e < self.n_experts})
            if bad:
                problems.append(f"layer {layer}: expert ids {bad} outside 0..{self.n_experts - 1}")
            missing = sorted(set(range(self.n_experts)) - set(held))
            if missing:
                problems.append(f"layer {layer}: experts {missing} are on no shard")
            for s, experts in enumerate(per):
                if len(set(experts)) != len(experts):
                    problems.append(f"layer {layer} shard {s}: duplicate experts {list(experts)}")
        if problems:
            raise PlacementError(f"invalid placement version {self.version}: " + "; ".join(problems))

    def union(self, other: Placement, version: int | None = None) -> Placement:
        """Shard-wise union (what a shard holds while the decoder moves from one to the other)."""
        if (self.n_experts, self.n_shards, set(self.layers)) != (
            other.n_experts,
            other.n_shards,
            set(other.layers),
        ):
            raise PlacementError(
                f"cannot unite placements of different shapes: {self.n_experts} experts x {self.n_shards} "
                f"shards vs {other.n_experts} x {other.n_shards}"
            )
        layers = {
            layer: tuple(
                tuple(sorted(set(a) | set(b))) for a, b in zip(per, other.layers[layer], strict=True)
            )
            for layer, per in self.layers.items()
        }
        return Placement(other.version if version is None else version, self.n_experts, layers)

    # ---- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "n_experts": self.n_experts,
            "layers": {str(k): [list(s) for s in v] for k, v in sorted(self.layers.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, raw: dict) -> Placement:
        try:
            layers = {
                int(k): tuple(tuple(sorted(int(e) for e in s)) for s in v) for k, v in raw["layers"].items()
            }
            p = cls(int(raw["version"]), int(raw["n_experts"]), layers)
        except (KeyError, TypeError, ValueError) as exc:
            raise PlacementError(f"malformed placement document: {exc!r} in {str(raw)[:200]}") from exc
        p.validate()
        return p

    @classmethod
    def from_json(cls, text: str) -> Placement:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise PlacementError(f"placement is not JSON: {exc}") from exc


def contiguous_placement(
    n_experts: int, moe_layers: Sequence[int], n_shards: int, version: int = 1
) -> Placement:
    """Experts split into ``n_shards`` contiguous ranges, the same for every layer (no replicas)."""
    if n_shards < 1 or n_shards > n_experts:
        raise PlacementError(f"need 1 <= shards <= experts, got {n_shards} shards for {n_experts} experts")
    bounds = [i * n_experts // n_shards for i in range(n_shards + 1)]
    per = tuple(tuple(range(bounds[s], bounds[s + 1])) for s in range(n_shards))
    p = Placement(version, n_experts, {int(layer): per for layer in moe_layers})
    p.validate()
    return p


# ---- stores ------------------------------------------------------------------------------------
class PlacementStore(Protocol):
    def get(self, version: int) -> Placement: ...

    def put(self, placement: Placement) -> None: ...

    def active_version(self) -> int: ...

    def set_active(self, version: int) -> None: ...


def active_placement(store: PlacementStore) -> Placement:
    return store.get(store.active_version())


class FilePlacementStore:
    """Embedded mode: ``<dir>/placement-<version>.json`` files plus ``<dir>/active`` (the version)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, version: int) -> Path:
        return self.folder / f"placement-{version}.json"

    def get(self, version: int) -> Placement:
        path = self._path(version)
        try:
            return Placement.from_json(path.read_text())
        except FileNotFoundError as exc:
            raise PlacementError(f"placement version {version} not found at {path}") from exc

    def put(self, placement: Placement) -> None:
        placement.validate()
        self.folder.mkdir(parents=True, exist_ok=True)
        _atomic_write(self._path(placement.version), placement.to_json())

    def active_version(self) -> int:
        path = self.folder / "active"
        try:
            return int(path.read_text().strip())
        except FileNotFoundError as exc:
            raise PlacementError(f"no active placement at {path}") from exc
        except ValueError as exc:
            raise PlacementError(f"{path} does not hold a version number: {exc}") from exc

    def set_active(self, version: int) -> None:
        self.get(version)  # only a stored, valid version can become active
        _atomic_write(self.folder / "active", f"{version}\n")
        log.info("placement version %d is now active in %s", version, self.folder)


def _atomic_write(path: Path, text: str) -> None:
    # Readers in other processes never see a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
