"""Continuous batching over the decoder's non-expert layers, with routed experts behind an executor.

The decoder keeps every page's keys/values in one batch pool (rows right-aligned at position 0,
each row with its own length). Between steps, finished pages leave and waiting pages join: joiners
are prefilled together (left-padded, as ``ocrstream.model.generation.generate`` does) and their
keys move into the pool. Each MoE layer hands its routed tokens to an ``ExpertExecutor``: the
model's own expert modules (monolithic) or ``ShardedExperts``, which groups assignments by shard,
calls every shard once per layer and step, and sums the outputs per token in fp32 in expert order
(``moe_experts_modules_ref``'s order, so greedy output matches the in-process model).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ocrstream.kernels import dispatch
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.generation import apply_ngram_rule, choose_tokens, left_pad
from ocrstream.model.moe_decoder import DeepseekV2MoE, KVCache, build_attn_mask, rotary_cos_sin
from ocrstream.serving.metrics import ExpertLoad
from ocrstream.serving.placement import Placement, PlacementStore

log = logging.getLogger(__name__)


# ---- requests -----------------------------------------------------------------------------------
@dataclass
class GenResult:
    token_ids: list[int]
    stopped: bool


@dataclass
class GenRequest:
    """One page's generation. Callbacks run on the engine thread."""

    rid: str
    input_ids: list[int]
    image_embeds: torch.Tensor | None  # [n_placeholders, hidden] in prompt order
    max_new_tokens: int
    stop_ids: frozenset[int]
    temperature: float = 0.0
    top_p: float = 1.0
    ngram: tuple[int, int] | None = None
    ngram_whitelist: tuple[int, ...] = ()
    seed: int | None = None
    on_token: Callable[[GenRequest, int], None] | None = None
    on_done: Callable[[GenRequest, GenResult | Exception], None] | None = None
    is_cancelled: Callable[[], bool] | None = None
    generated: list[int] = field(default_factory=list)
    stopped: bool = False
    generator: torch.Generator | None = None

    def validate(self, vocab: int, hidden: int, image_token_id: int) -> None:
        problems = []
        if not self.input_ids:
            problems.append("empty input_ids")
        bad = [t for t in self.input_ids if not 0 <= t < vocab]
        if bad:
            problems.append(f"token ids {bad[:5]} outside the vocab of {vocab}")
        n_slots = sum(1 for t in self.input_ids if t == image_token_id)
        n_emb = 0 if self.image_embeds is None else int(self.image_embeds.shape[0])
        if n_slots != n_emb:
            problems.append(f"{n_slots} <image> placeholders but {n_emb} image embeddings")
        if self.image_embeds is not None and (
            self.image_embeds.dim() != 2 or self.image_embeds.shape[1] != hidden
        ):
            problems.append(f"image embeddings must be [n, {hidden}], got {tuple(self.image_embeds.shape)}")
        if self.max_new_tokens < 0 or self.temperature < 0 or not 0 < self.top_p <= 1:
            problems.append(
                f"bad sampling: max_new_tokens {self.max_new_tokens}, temperature {self.temperature}, top_p {self.top_p}"
            )
        if self.ngram is not None and (self.ngram[0] < 1 or self.ngram[1] < self.ngram[0]):
            problems.append(f"ngram (n, window) needs 1 <= n <= window, got {self.ngram}")
        if problems:
            raise ValueError(f"request {self.rid}: " + "; ".join(problems))


# ---- experts ------------------------------------------------------------------------------------
class ExpertExecutor(Protocol):
    def run(self, layer: int, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ_k w_k · expert_{ids_k}(x) for x [N, H], ids/weights [N, k] -> [N, H] in x.dtype."""

    def between_steps(self) -> None:
        """Called with no forward pass in flight (placement switches happen here)."""


class ModuleExperts:
    """Monolithic: the model's own expert modules (exactly the in-process computation)."""

    def __init__(self, model: DeepseekOCRForCausalLM, load: ExpertLoad | None = None) -> None:
        self.layers = {
            i: layer.mlp for i, layer in enumerate(model.model.layers) if isinstance(layer.mlp, DeepseekV2MoE)
        }
        self.load = load

    def run(self, layer: int, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        mlp = self.layers[layer]
        if self.load is not None:
            self.load.add(layer, torch.bincount(ids.reshape(-1), minlength=len(mlp.experts)).numpy())
        return dispatch.moe_experts_modules(x, mlp.experts, ids, weights)

    def between_steps(self) -> None:
        pass


class ShardTransport(Protocol):
    def call_many(
        self, layer: int, calls: list[tuple[int, torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """For each (shard, rows [n, H], expert ids [n]): expert_{id}(row) per row, all shards at once."""


class ShardedExperts:
    """Routes assignments to shards by the current placement; follows the store's active version."""

    def __init__(
        self,
        transport: ShardTransport,
        placement: Placement,
        store: PlacementStore | None = None,
        load: ExpertLoad | None = None,
        refresh_interval_s: float = 0.0,
    ) -> None:
        self.transport = transport
        self.store = store
        self.load = load
        self.refresh_interval_s = refresh_interval_s
        self._next_check = 0.0
        self._set(placement)

    def _set(self, placement: Placement) -> None:
        self.placement = placement
        if self.load is not None:
            self.load.placement_version.set(placement.version)
        self._replicas = {layer: placement.replicas(layer) for layer in placement.layers}

    def between_steps(self) -> None:
        if self.store is None or time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + self.refresh_interval_s
        try:
            version = self.store.active_version()
            if version != self.placement.version:
                new = self.store.get(version)
                if (new.n_experts, set(new.layers)) != (self.placement.n_experts, set(self.placement.layers)):
                    raise ValueError(f"placement {version} does not fit this model")
                self._set(new)
                log.info("decoder switched to placement version %d", version)
        except Exception:  # a broken store must not stop decoding: keep the current placement
            log.exception("placement refresh failed; staying on version %d", self.placement.version)

    def run(self, layer: int, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        n, k = ids.shape
        n_experts = self.placement.n_experts
        flat_idx = ids.reshape(-1).long()
        flat_w = weights.reshape(-1)
        token_of = torch.arange(n).repeat_interleave(k)
        order = torch.argsort(flat_idx, stable=True)
        counts = torch.bincount(flat_idx, minlength=n_experts)
        shard_of = torch.empty(n * k, dtype=torch.long)
        start = 0
        reps = self._replicas[layer]
        for e, c in enumerate(counts.tolist()):
            if c == 0:
                continue
            sel = order[start : start + c]
            start += c
            rs = reps[e]
            # Replicas share an expert's tokens evenly (the planner's load model).
            shard_of[sel] = torch.as_tensor(rs)[torch.arange(c) * len(rs) // c] if len(rs) > 1 else rs[0]
        calls, picks = [], []
        ordered_shard = shard_of[order]
        for s in range(self.placement.n_shards):
            a = order[ordered_shard == s]  # this shard's assignments, in expert order
            if a.numel():
                calls.append((s, x[token_of[a]], flat_idx[a]))
                picks.append(a)
        outs = self.transport.call_many(layer, calls)
        y = torch.empty(n * k, x.shape[1], dtype=x.dtype)
        for a, out, (s, rows, _) in zip(picks, outs, calls, strict=True):
            if out.shape != rows.shape:
                raise RuntimeError(
                    f"shard {s} layer {layer}: got {tuple(out.shape)} for {tuple(rows.shape)} rows"
                )
            y[a] = out.to(x.dtype)
            if self.load is not None:
                self.load.add_shard(s, int(a.numel()))
        if self.load is not None:
            self.load.add(layer, counts.numpy())
        out = torch.zeros(n, x.shape[1], dtype=torch.float32)
        start = 0
        for c in counts.tolist():
            if c == 0:
                continue
            sel = order[start : start + c]
            start += c
            out.index_add_(0, token_of[sel], y[sel].float() * flat_w[sel, None])
        return out.to(x.dtype)


# ---- the batch's keys/values -------------------------------------------------------------------
class BatchKV:
    """Per-layer keys/values [B, kv_heads, capacity, hd]; row i holds ``lengths[i]`` tokens from 0.

    Implements the ``update(layer, k, v)`` hook ``DeepseekV2Attention`` calls: one new token per row,
    written at that row's own length.
    """

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.lengths = torch.zeros(0, dtype=torch.long)

    @property
    def rows(self) -> int:
        return int(self.lengths.numel())

    def capacity(self) -> int:
        return 0 if self.k[0] is None else int(self.k[0].shape[2])

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(self.rows)
        self.k[layer][rows, :, self.lengths] = k[:, :, 0]  # type: ignore[index]
        self.v[layer][rows, :, self.lengths] = v[:, :, 0]  # type: ignore[index]
        end = int(self.lengths.max()) + 1
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # type: ignore[index]

    def key_mask(self) -> torch.Tensor:
        """[B, 1, 1, L]: each row sees its own tokens and the one being written."""
        end = int(self.lengths.max()) + 1
        return (torch.arange(end)[None, :] <= self.lengths[:, None])[:, None, None, :]

    def rebuild(self, keep: torch.Tensor, new: KVCache | None, new_valid: torch.Tensor | None) -> None:
        """Keep rows ``keep`` (in order) and append the rows of a left-padded prefill cache."""
        new_lengths = new_valid.sum(dim=1) if new is not None else torch.zeros(0, dtype=torch.long)
        lengths = torch.cat([self.lengths[keep], new_lengths])
        need = int(lengths.max()) + 1 if lengths.numel() else 1
        cap = self.capacity()
        if need > cap:
            cap = max(need + 64, 2 * cap)
        for layer in range(self.n_layers):
            ref = self.k[layer] if self.k[layer] is not None else (new.k[layer] if new is not None else None)
            if ref is None:
                continue
            shape = (int(lengths.numel()), ref.shape[1], cap, ref.shape[3])
            k_new, v_new = ref.new_zeros(shape), ref.new_zeros(shape)
            if self.k[layer] is not None and keep.numel():
                old = min(self.capacity(), cap)
                k_new[: keep.numel(), :, :old] = self.k[layer][keep, :, :old]  # type: ignore[index]
                v_new[: keep.numel(), :, :old] = self.v[layer][keep, :, :old]  # type: ignore[index]
            if new is not None:
                width = new.length
                for j in range(new_lengths.numel()):
                    n = int(new_lengths[j])
                    row = keep.numel() + j
                    # left-padded prefill: the real tokens are the last n of the width
                    k_new[row, :, :n] = new.k[layer][j, :, width - n : width]  # type: ignore[index]
                    v_new[row, :, :n] = new.v[layer][j, :, width - n : width]  # type: ignore[index]
            self.k[layer], self.v[layer] = k_new, v_new
        self.lengths = lengths


# ---- the engine ---------------------------------------------------------------------------------
class Engine:
    """Runs many pages' generations as one batch that pages join and leave between steps."""

    def __init__(
        self,
        model: DeepseekOCRForCausalLM,
        experts: ExpertExecutor,
        max_batch: int = 32,
        load: ExpertLoad | None = None,
    ) -> None:
        self.model = model
        self.cfg = model.config
        self.experts = experts
        self.max_batch = max_batch
        self.load = load
        m = model.model
        self.layers = list(m.layers)
        self.moe = {i for i, layer in enumerate(self.layers) if isinstance(layer.mlp, DeepseekV2MoE)}
        self.active: list[GenRequest] = []
        self.pending_logits: torch.Tensor | None = None  # [B, V] for self.active
        self.kv = BatchKV(len(self.layers))
        self._waiting: deque[GenRequest] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._needs_forward = False  # tokens chosen, their forward pass not done yet
        self._feed = torch.zeros(0, dtype=torch.long)
        self.max_step_retries = 2
        self.steps = 0
        self.step_seconds = 0.0

    # ---- public -------------------------------------------------------------------------------
    def submit(self, req: GenRequest) -> None:
        d = self.cfg.decoder
        req.validate(d.vocab_size, d.hidden_size, self.cfg.image_token_id)
        if req.temperature > 0:
            req.generator = torch.Generator().manual_seed(
                req.seed if req.seed is not None else int(time.time_ns() % 2**63)
            )
        with self._cv:
            self._waiting.append(req)
            self._cv.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="decoder-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def idle(self) -> bool:
        with self._cv:
            return not self._waiting and not self.active

    def run_until_idle(self) -> None:
        """Synchronous driving (tests, benchmarks without a thread)."""
        while not self.idle():
            self.step()

    # ---- loop ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        failures = 0
        while True:
            with self._cv:
                while not self._stop and not self._waiting and not self.active:
                    self._cv.wait()
                if self._stop:
                    break
            try:
                self.step()
                failures = 0
            except Exception as exc:
                failures += 1
                if failures <= self.max_step_retries:
                    log.warning(
                        "decode step failed (%d of %d tries), re-running it: %s",
                        failures,
                        self.max_step_retries + 1,
                        exc,
                    )
                    time.sleep(0.1 * 2**failures)
                    continue
                # The batch cannot continue: fail its pages (clients resend them), keep serving.
                log.exception("decode step failed; failing %d active pages", len(self.active))
                for r in self.active:
                    self._finish(r, exc)
                self.active, self.pending_logits, self._needs_forward = [], None, False
                self.kv = BatchKV(len(self.layers))
                failures = 0
        for r in self.active + list(self._waiting):
            self._finish(r, RuntimeError("decoder model is shutting down"))

    @torch.no_grad()
    def step(self) -> None:
        """One batched forward pass. A pass that raised is re-run by the next call (its tokens were
        already chosen and keys are written at positional slots, so a re-run is exact)."""
        t0 = time.perf_counter()
        self.experts.between_steps()
        if not self._needs_forward:
            self._admit()
            if self.active and self.pending_logits is not None:
                self._shrink(self._sample())
        if self._needs_forward:
            self._forward()
            self._needs_forward = False
        self.steps += 1
        self.step_seconds += time.perf_counter() - t0

    def _admit(self) -> None:
        joiners: list[GenRequest] = []
        with self._cv:
            while self._waiting and len(self.active) + len(joiners) < self.max_batch:
                r = self._waiting.popleft()
                if r.max_new_tokens == 0:
                    self._finish(r, GenResult([], False))
                else:
                    joiners.append(r)
        if not joiners:
            return
        try:
            logits, cache, valid = self._prefill(joiners)
        except Exception as exc:  # only the joiners fail; the running batch is untouched
            log.exception("prefill of %d joining pages failed", len(joiners))
            for r in joiners:
                self._finish(r, exc)
            return
        self.kv.rebuild(torch.arange(len(self.active)), cache, valid)
        self.active.extend(joiners)
        self.pending_logits = (
            logits if self.pending_logits is None else torch.cat([self.pending_logits, logits])
        )

    def _sample(self) -> torch.Tensor:
        """Choose each row's token from its pending logits; finished rows leave. -> rows kept."""
        logits = self.pending_logits
        assert logits is not None
        keep, tokens = [], []
        greedy = logits.argmax(dim=-1).tolist()
        for i, r in enumerate(self.active):
            if r.ngram is not None:
                apply_ngram_rule(logits[i : i + 1], [r.generated], r.ngram[0], r.ngram[1], r.ngram_whitelist)
                tok = int(logits[i].argmax()) if r.temperature == 0 else None
            else:
                tok = greedy[i] if r.temperature == 0 else None
            if tok is None:
                tok = int(choose_tokens(logits[i : i + 1], r.temperature, r.top_p, r.generator)[0])
            cancelled = r.is_cancelled is not None and r.is_cancelled()
            if tok in r.stop_ids:
                r.stopped = True
            else:
                r.generated.append(tok)
                if r.on_token is not None and not cancelled:
                    r.on_token(r, tok)
            if r.stopped or cancelled or len(r.generated) >= r.max_new_tokens:
                self._finish(r, GenResult(list(r.generated), r.stopped))
            else:
                keep.append(i)
                tokens.append(tok)
        self._feed = torch.tensor(tokens, dtype=torch.long)
        return torch.tensor(keep, dtype=torch.long)

    def _shrink(self, keep: torch.Tensor) -> None:
        """Drop the rows that left; the rest need a forward pass for their chosen tokens."""
        if keep.numel() != len(self.active):
            self.kv.rebuild(keep, None, None)
            self.active = [self.active[i] for i in keep.tolist()]
        if not self.active:
            self.pending_logits = None
        self._needs_forward = bool(self.active)

    def _forward(self) -> None:
        d = self.cfg.decoder
        x = self.model.model.embed_tokens(self._feed[:, None])  # [B, 1, H]
        cos, sin = rotary_cos_sin(self.kv.lengths[:, None], d.head_dim, d.rope_theta, x.dtype)
        hidden = self._layers(x, cos, sin, self.kv.key_mask(), self.kv, None)
        self.kv.lengths = self.kv.lengths + 1
        self.pending_logits = self.model.lm_head(hidden[:, -1]).float()
        if self.load is not None:
            self.load.steps.labels("decode").inc()

    def _prefill(self, reqs: Sequence[GenRequest]) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
        d = self.cfg.decoder
        ids, valid = left_pad([r.input_ids for r in reqs], d.pad_token_id, torch.device("cpu"))
        embeds = [r.image_embeds for r in reqs if r.image_embeds is not None and r.image_embeds.shape[0]]
        x = self.model.embed_inputs(ids, embeds or None)
        cache = KVCache(len(self.layers))
        positions = (valid.long().cumsum(dim=1) - 1).clamp_min(0)
        key_valid = cache.append_mask(valid)
        mask = build_attn_mask(ids.shape[1], key_valid)
        cos, sin = rotary_cos_sin(positions, d.head_dim, d.rope_theta, x.dtype)
        hidden = self._layers(x, cos, sin, mask, cache, valid.reshape(-1))
        cache.advance(ids.shape[1])
        if self.load is not None:
            self.load.steps.labels("prefill").inc()
        return self.model.lm_head(hidden[:, -1]).float(), cache, valid

    def _layers(self, x, cos, sin, mask, cache, valid_flat):  # noqa: ANN001 - hot path
        for i, layer in enumerate(self.layers):
            h = x + layer.self_attn(layer.input_layernorm(x), cos, sin, mask, cache)
            y = layer.post_attention_layernorm(h)
            x = h + (self._moe(i, layer.mlp, y, valid_flat) if i in self.moe else layer.mlp(y))
        return self.model.model.norm(x)

    def _moe(
        self, i: int, mlp: DeepseekV2MoE, y: torch.Tensor, valid_flat: torch.Tensor | None
    ) -> torch.Tensor:
        shape = y.shape
        flat = y.reshape(-1, shape[-1])  # [N, H]
        g = mlp.gate
        route = dispatch.moe_route(flat, g.weight, g.top_k, g.norm_topk_prob, g.scaling)
        ids, w = route.topk_ids.long(), route.topk_weights
        if valid_flat is None or bool(valid_flat.all()):
            routed = self.experts.run(i, flat, ids, w)
        else:
            # Padding rows never reach a shard: their keys are masked out everywhere.
            rows = valid_flat.nonzero().squeeze(1)
            routed = torch.zeros_like(flat)
            routed[rows] = self.experts.run(i, flat[rows], ids[rows], w[rows])
        out = routed.view(shape)
        if mlp.shared_experts is not None:
            out = out + mlp.shared_experts(y)
        return out

    def _finish(self, r: GenRequest, result: GenResult | Exception) -> None:
        if r.on_done is None:
            return
        try:
            r.on_done(r, result)
        except Exception:  # a broken callback must not take the batch down
            log.exception("completion callback of request %s failed", r.rid)
