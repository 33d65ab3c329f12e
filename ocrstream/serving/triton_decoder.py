"""Logic of ``model_repo/ocr_decoder/1/model.py``: a decoupled model running continuous batching.

``execute`` only parses each request into a ``GenRequest`` and hands it to the engine thread, which
streams tokens back through the request's response sender and finishes with the final response.
Experts: ``num_shards`` = 0 keeps them in this model (monolithic); otherwise every MoE layer of
every step calls each shard model holding routed tokens once, concurrently (BLS ``async_exec`` +
``asyncio.gather`` on the engine thread's event loop). Parameters (config.pbtxt): ``checkpoint``
(folder or s3://bucket/prefix), ``num_shards``, ``shard_prefix``, ``placement_store`` (folder or
configmap:<ns>/<name>; empty = contiguous split), ``max_batch``, ``metrics_port``, ``bls_retries``,
``dtype`` (empty: bf16 on a GPU, fp32 on the CPU), ``shard_dtype`` (rows to the shards; default the
model's), ``kv_cache_mb`` (0: sized from free GPU memory, or 512 MiB on the CPU),
``kv_mem_fraction``, ``max_seq_len`` (0: the model's), ``cuda_graphs`` (auto | on | off).

Device: the instance's (KIND_GPU: that GPU). Tensors stay there: vision tokens are staged through
pinned memory once, the shards get and return rows over DLPack (BLS with GPU tensors).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import torch

from ocrstream.model.config import DeepseekOCRConfig
from ocrstream.model.runtime import VisionTokens
from ocrstream.model.tokenizer import OcrTokenizer, resolve_prompt
from ocrstream.serving.checkpoint import (
    encoder_weights_id_from_checkpoint,
    load_decoder_core,
    resolve_checkpoint,
)
from ocrstream.serving.device import (
    from_pb,
    instance_device,
    preferred_memory,
    resolve_dtype,
    stage_to_device,
    to_pb,
)
from ocrstream.serving.engine import Engine, GenRequest, GenResult, ModuleExperts, ShardedExperts
from ocrstream.serving.expert_shard import model_params
from ocrstream.serving.k8s_placement import open_store
from ocrstream.serving.metrics import ExpertLoad
from ocrstream.serving.placement import contiguous_placement
from ocrstream.serving.protocol import shard_model_name

log = logging.getLogger(__name__)


class BlsTransport:
    """Calls shard models from the engine thread, all of a layer's shards at once."""

    def __init__(
        self,
        pb_utils: Any,
        names: list[str],
        retries: int = 3,
        backoff_s: float = 0.2,
        device: torch.device | None = None,
        wire_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.pb = pb_utils
        self.names = names
        self.retries = retries
        self.backoff_s = backoff_s
        self.device = device or torch.device("cpu")
        self.wire_dtype = wire_dtype
        self._where = preferred_memory(pb_utils, self.device)  # outputs back on our GPU
        self.loop = asyncio.new_event_loop()  # owned by the engine thread (the only caller)

    def _request(self, shard: int, layer: int, rows: torch.Tensor, ids: torch.Tensor) -> Any:
        pb = self.pb
        return pb.InferenceRequest(
            model_name=self.names[shard],
            requested_output_names=["EXPERT_OUT"],
            inputs=[
                pb.Tensor("LAYER", np.array([layer], dtype=np.int32)),
                to_pb(pb, "HIDDEN", rows.to(self.wire_dtype)),
                to_pb(pb, "EXPERT_IDS", ids.to(torch.int32)),
            ],
            **self._where,
        )

    async def _gather(self, reqs: list[Any]) -> list[Any]:
        return await asyncio.gather(*[r.async_exec() for r in reqs])

    def call_many(
        self, layer: int, calls: list[tuple[int, torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        results: list[torch.Tensor | None] = [None] * len(calls)
        todo = list(range(len(calls)))
        errors: list[str] = []
        for attempt in range(self.retries + 1):
            reqs = [self._request(calls[i][0], layer, calls[i][1], calls[i][2]) for i in todo]
            resps = self.loop.run_until_complete(self._gather(reqs))
            failed = []
            for i, resp in zip(todo, resps, strict=True):
                if resp.has_error():
                    failed.append(i)
                    errors.append(f"{self.names[calls[i][0]]}: {resp.error().message()}")
                else:
                    out = from_pb(self.pb.get_output_tensor_by_name(resp, "EXPERT_OUT"))
                    results[i] = out.to(self.device, copy=True)  # the response's buffer goes with it
            if not failed:
                return results  # type: ignore[return-value]
            todo = failed
            log.warning(
                "layer %d: %d shard calls failed (attempt %d): %s",
                layer,
                len(failed),
                attempt + 1,
                errors[-1],
            )
            time.sleep(self.backoff_s * 2**attempt)
        raise RuntimeError(
            f"expert shards failed for layer {layer} after {self.retries + 1} attempts: {errors[-3:]}"
        )


def _opt(pb: Any, req: Any, name: str, default: Any) -> Any:
    t = pb.get_input_tensor_by_name(req, name)
    return default if t is None else t.as_numpy().reshape(-1)


class DecoderModel:
    def __init__(self, args: dict, pb_utils: Any) -> None:
        self.pb = pb_utils
        config, params = model_params(args)
        self.name = config["name"]
        torch.set_num_threads(int(params.get("torch_threads", "1") or 1))
        self.device = instance_device(args)
        dtype = resolve_dtype(params.get("dtype", ""), self.device)
        folder = resolve_checkpoint(params.get("checkpoint", ""))
        self.cfg = DeepseekOCRConfig.from_json_file(folder / "config.json")
        d = self.cfg.decoder
        n_shards = int(params.get("num_shards", "0") or 0)
        moe_layers = [i for i in range(d.num_hidden_layers) if d.is_moe_layer(i)]
        self.load = ExpertLoad(moe_layers, d.n_routed_experts)
        model = to_device(load_decoder_core(folder, dtype, with_experts=n_shards == 0), self.device)
        if n_shards == 0:
            experts: Any = ModuleExperts(model, self.load)
        else:
            prefix = params.get("shard_prefix", "expert_shard")
            names = [shard_model_name(prefix, s) for s in range(n_shards)]
            spec = params.get("placement_store", "")
            store = open_store(spec) if spec else None
            placement = (
                store.get(store.active_version())
                if store is not None
                else contiguous_placement(d.n_routed_experts, moe_layers, n_shards)
            )
            if placement.n_shards != n_shards:
                raise ValueError(f"placement has {placement.n_shards} shards, num_shards is {n_shards}")
            wire = resolve_dtype(params.get("shard_dtype") or dtype, self.device)  # the shards' HIDDEN type
            transport = BlsTransport(
                pb_utils, names, int(params.get("bls_retries", "3") or 3), device=self.device, wire_dtype=wire
            )
            experts = ShardedExperts(
                transport, placement, store, self.load, float(params.get("placement_refresh_s", "0") or 0)
            )
        # Vision tokens from another encoder would decode to garbage: refuse them (empty id = unchecked).
        check = params.get("check_weights_id", "1") not in ("0", "false", "")
        self.weights_id = encoder_weights_id_from_checkpoint(folder, dtype) if check else ""
        self.tokenizer = OcrTokenizer.from_file(
            folder / "tokenizer.json", image_token_id=self.cfg.image_token_id
        )
        stop = {d.eos_token_id}
        if self.tokenizer.ids.get("eos") is not None:
            stop.add(self.tokenizer.ids["eos"])
        self.stop_ids = frozenset(stop)
        self.engine = Engine(
            model,
            experts,
            int(params.get("max_batch", "32") or 32),
            self.load,
            kv_budget_bytes=int(float(params.get("kv_cache_mb", "0") or 0) * 2**20),
            kv_mem_fraction=float(params.get("kv_mem_fraction", "0.9") or 0.9),
            max_len=int(params.get("max_seq_len", "0") or 0),
            cuda_graphs=params.get("cuda_graphs", "auto") or "auto",
        )
        self.engine.start()
        self.load.serve(int(params.get("metrics_port", "0") or 0))
        log.info("%s ready: %s, %d shards, %s, %s", self.name, folder, n_shards, self.device, dtype)

    # ---- requests -----------------------------------------------------------------------------
    def _parse(self, req: Any, sender: Any) -> GenRequest:
        pb = self.pb
        blobs = pb.get_input_tensor_by_name(req, "VISION_TOKENS").as_numpy().reshape(-1)
        prompt = pb.get_input_tensor_by_name(req, "PROMPT").as_numpy().reshape(-1)[0]
        prompt = prompt.decode() if isinstance(prompt, bytes) else str(prompt)
        max_new = int(pb.get_input_tensor_by_name(req, "MAX_NEW_TOKENS").as_numpy().reshape(-1)[0])
        temperature = float(_opt(pb, req, "TEMPERATURE", [0.0])[0])
        top_p = float(_opt(pb, req, "TOP_P", [1.0])[0])
        ngram = [int(v) for v in _opt(pb, req, "NGRAM", [0, 0])]
        seed = _opt(pb, req, "SEED", None)
        stream = bool(_opt(pb, req, "STREAM", [False])[0])
        hidden = self.cfg.decoder.hidden_size
        vts = [VisionTokens.from_bytes(bytes(b)) for b in blobs]
        for vt in vts:
            vt.validate(hidden)
            if vt.views != 1:
                raise ValueError(f"reflowed VisionTokens ({vt.views} views): send one request per view")
            if self.weights_id and vt.weights_id and vt.weights_id != self.weights_id:
                raise ValueError(
                    f"VisionTokens from encoder {vt.weights_id}, this decoder's encoder is {self.weights_id}"
                )
        ids = self.tokenizer.build_input_ids(resolve_prompt(prompt), [vt.n_placeholders for vt in vts])
        # one host copy into pinned memory (casting there), then an async upload on CUDA
        embeds = (
            stage_to_device(torch.cat([vt.embeds for vt in vts]), self.device, self.engine.model.dtype)
            if vts
            else None
        )
        rid = req.request_id() or f"req-{id(req)}"
        return GenRequest(
            rid=rid,
            input_ids=ids,
            image_embeds=embeds,
            max_new_tokens=max_new,
            stop_ids=self.stop_ids,
            temperature=temperature,
            top_p=top_p,
            ngram=(ngram[0], ngram[1]) if len(ngram) == 2 and ngram[0] > 0 else None,
            ngram_whitelist=tuple(self.cfg.ngram_whitelist),
            seed=None if seed is None else int(seed[0]),
            on_token=self._send_token(sender) if stream else None,
            on_done=self._send_final(sender),
            is_cancelled=getattr(sender, "is_cancelled", None),
        )

    def _send_token(self, sender: Any):  # noqa: ANN202
        pb = self.pb

        def send(_req: GenRequest, tok: int) -> None:
            sender.send(
                pb.InferenceResponse(output_tensors=[pb.Tensor("TOKEN_IDS", np.array([tok], dtype=np.int32))])
            )

        return send

    def _send_final(self, sender: Any):  # noqa: ANN202
        pb = self.pb
        final = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL

        def done(_req: GenRequest, res: GenResult | Exception) -> None:
            if isinstance(res, Exception):
                sender.send(pb.InferenceResponse(error=pb.TritonError(f"{self.name}: {res}")), flags=final)
                return
            ids = np.array(res.token_ids, dtype=np.int32)
            text = self.tokenizer.decode(res.token_ids)
            outs = [
                pb.Tensor("TOKEN_IDS", ids),
                pb.Tensor("TEXT", np.array([text.encode()], dtype=np.object_)),
                pb.Tensor("STOPPED", np.array([res.stopped], dtype=np.bool_)),
                pb.Tensor("N_TOKENS", np.array([len(ids)], dtype=np.int32)),
            ]
            sender.send(pb.InferenceResponse(output_tensors=outs), flags=final)

        return done

    def execute(self, requests: list) -> None:
        pb = self.pb
        for req in requests:
            sender = req.get_response_sender()
            try:
                self.engine.submit(self._parse(req, sender))
            except (ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
                # This request alone is refused; the running batch is untouched.
                code = getattr(pb.TritonError, "INVALID_ARG", None)
                msg = f"{self.name}: bad request: {exc}"
                err = pb.TritonError(msg) if code is None else pb.TritonError(msg, code)
                sender.send(pb.InferenceResponse(error=err), flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def is_ready(self) -> bool:
        return self.engine._thread is not None and self.engine._thread.is_alive()

    def finalize(self) -> None:
        self.engine.stop()


def to_device(model: Any, device: torch.device) -> Any:
    """Move the decoder's materialised parts to ``device`` (the encoder stays on the meta device)."""
    if device.type == "cpu":
        return model
    for module in (model.model.embed_tokens, model.model.layers, model.model.norm, model.lm_head):
        module.to(device)
    return model
