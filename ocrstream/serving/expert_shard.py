"""An expert shard: a disjoint set of routed experts (per MoE layer) and the computation on them.

``ExpertShard.compute(layer, rows, expert_ids)`` returns expert_{id}(row) for every row, each expert
run on its rows with ``F.linear`` exactly as ``DeepseekV2MLP`` does. ``ShardModel`` is the logic of
``model_repo/expert_shard_*/1/model.py``: its parameters name the checkpoint, the shard id and the
placement (a store plus the versions to hold; during a rebalance a shard holds the union of the old
and new placements so that requests routed by either are served). Its weights live on the
instance's device (a KIND_GPU instance: that GPU, bf16 by default); rows arrive and leave over
DLPack in the wire dtype the config declares, without numpy copies.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F

from ocrstream.serving.checkpoint import load_experts, resolve_checkpoint
from ocrstream.serving.device import from_pb, instance_device, resolve_dtype, to_pb
from ocrstream.serving.k8s_placement import open_store
from ocrstream.serving.placement import Placement, contiguous_placement

log = logging.getLogger(__name__)


# config.pbtxt data types of the rows -> torch dtypes
WIRE_DTYPES = {"TYPE_FP32": torch.float32, "TYPE_BF16": torch.bfloat16, "TYPE_FP16": torch.float16}


class ExpertNotHeld(LookupError):
    """A request named an expert this shard does not hold."""


class ExpertShard:
    def __init__(
        self, shard_id: int, weights: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ) -> None:
        self.shard_id = shard_id
        self.weights = weights
        self.dtype = next(iter(weights.values()))[0].dtype if weights else torch.float32

    @classmethod
    def from_checkpoint(
        cls,
        folder: str,
        shard_id: int,
        placements: Iterable[Placement],
        dtype: Any = None,
        device: torch.device | str = "cpu",
    ) -> ExpertShard:
        wanted = {
            (layer, e) for p in placements for layer, es in p.shard_experts(shard_id).items() for e in es
        }
        _, weights = load_experts(folder, wanted, dtype)
        moved = {key: tuple(w.to(device) for w in trio) for key, trio in weights.items()}
        return cls(shard_id, moved)  # type: ignore[arg-type]

    def held(self) -> set[tuple[int, int]]:
        return set(self.weights)

    @torch.no_grad()
    def compute(self, layer: int, rows: torch.Tensor, expert_ids: torch.Tensor) -> torch.Tensor:
        """rows [n, H], expert_ids [n] -> [n, H] (rows' dtype)."""
        if rows.shape[0] != expert_ids.shape[0]:
            raise ValueError(f"{rows.shape[0]} rows but {expert_ids.shape[0]} expert ids")
        dev = next(iter(self.weights.values()))[0].device if self.weights else rows.device
        x = rows.to(dev, self.dtype)
        out = torch.empty_like(x)
        ids = expert_ids.to(dev).long()
        for e in torch.unique(ids).tolist():
            w = self.weights.get((layer, e))
            if w is None:
                raise ExpertNotHeld(
                    f"shard {self.shard_id} does not hold expert {e} of layer {layer} "
                    f"(holds {sorted(k[1] for k in self.weights if k[0] == layer)})"
                )
            sel = ids == e
            xe = x[sel]
            out[sel] = F.linear(F.silu(F.linear(xe, w[0])) * F.linear(xe, w[1]), w[2])
        return out.to(rows.dtype)


class LocalTransport:
    """Shards in this process (tests, benchmarks): the same compute without the network hop."""

    def __init__(self, shards: list[ExpertShard], threads: int = 0) -> None:
        self.shards = shards
        self._pool = ThreadPoolExecutor(threads) if threads > 0 else None

    def call_many(
        self, layer: int, calls: list[tuple[int, torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        if self._pool is None:
            return [self.shards[s].compute(layer, x, e) for s, x, e in calls]
        futs = [self._pool.submit(self.shards[s].compute, layer, x, e) for s, x, e in calls]
        return [f.result() for f in futs]


def model_params(args: dict) -> tuple[dict, dict[str, str]]:
    """(model config, parameters as plain strings) from the python backend's ``args``."""
    config = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    return config, params


def shard_placements(params: dict[str, str], moe_layers: list[int], n_experts: int) -> list[Placement]:
    """The placements a shard must serve: ``placement_versions`` (comma list; empty = the active one)
    from ``placement_store``, or the contiguous split over ``num_shards`` when no store is named."""
    spec = params.get("placement_store", "")
    if not spec:
        return [contiguous_placement(n_experts, moe_layers, int(params["num_shards"]))]
    store = open_store(spec)
    versions = [int(v) for v in params.get("placement_versions", "").split(",") if v.strip()]
    return [store.get(v) for v in versions or [store.active_version()]]


class ShardModel:
    """Logic behind ``expert_shard_*/1/model.py``: inputs LAYER, HIDDEN, EXPERT_IDS -> EXPERT_OUT."""

    def __init__(self, args: dict, pb_utils: Any) -> None:
        self.pb = pb_utils
        config, params = model_params(args)
        torch.set_num_threads(int(params.get("torch_threads", "1") or 1))
        self.name = config["name"]
        out_cfg = pb_utils.get_output_config_by_name(config, "EXPERT_OUT")
        self.out_dtype = WIRE_DTYPES[out_cfg["data_type"]]
        self.device = instance_device(args)
        dtype = resolve_dtype(params.get("dtype", ""), self.device)
        folder = resolve_checkpoint(params.get("checkpoint", ""))
        from ocrstream.model.config import DeepseekOCRConfig

        cfg = DeepseekOCRConfig.from_json_file(folder / "config.json").decoder
        moe_layers = [i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i)]
        placements = shard_placements(params, moe_layers, cfg.n_routed_experts)
        self.shard_id = int(params["shard_id"])
        self.versions = [p.version for p in placements]
        self.shard = ExpertShard.from_checkpoint(str(folder), self.shard_id, placements, dtype, self.device)
        self._lock = threading.Lock()
        self.ready = True
        log.info(
            "%s: shard %d holds %d (layer, expert) pairs for placement versions %s on %s in %s",
            self.name,
            self.shard_id,
            len(self.shard.weights),
            self.versions,
            self.device,
            dtype,
        )

    def execute(self, requests: list) -> list:
        pb = self.pb
        out = []
        for req in requests:
            try:
                layer = int(pb.get_input_tensor_by_name(req, "LAYER").as_numpy().reshape(-1)[0])
                rows = from_pb(pb.get_input_tensor_by_name(req, "HIDDEN"))
                ids = from_pb(pb.get_input_tensor_by_name(req, "EXPERT_IDS")).reshape(-1)
                y = self.shard.compute(layer, rows, ids).to(self.out_dtype)
                out.append(pb.InferenceResponse(output_tensors=[to_pb(pb, "EXPERT_OUT", y)]))
            except (ValueError, ExpertNotHeld, AttributeError) as exc:
                # One bad request gets its own error; the others in the batch go on.
                out.append(pb.InferenceResponse(error=pb.TritonError(f"{self.name}: {exc}")))
        return out

    def is_ready(self) -> bool:
        return self.ready
