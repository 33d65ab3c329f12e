"""Continuous batching over the decoder's non-expert layers on any torch device, with routed experts
behind an executor.

Pages join and leave the running batch between steps. Each running page owns one row of a
preallocated KV pool (``KVPool``: per layer [rows, kv_heads, max_len, head_dim] on the model's
device, sized by ``plan_kv`` from free GPU memory or, on the CPU, from a configured budget); the
running rows are kept at 0..n-1 (a leaving row's slot is refilled from the end, one row copied).
Each step: (1) waiting pages join: they are prefilled together (left-padded, positions counting
real tokens, as ``ocrstream.model.generation.generate``) and their keys/values are copied into
their rows; (2) every row chooses its token (``serving.sampling``: one indexed write for all
n-gram bans, one argmax, one device->host transfer); pages that stopped leave; (3) one decode pass
for the rest, each row's key written at its own length.

Static decode shapes (``static_shapes``): the decode pass runs for a batch padded to a bucket and
keys padded to a length bucket, with no host synchronisation inside, so on CUDA each (batch,
length) bucket is captured once as a CUDA graph and replayed (``DecodeGraphs``; kept only where the
replay measured faster than eager). Padding rows are free pool rows: their writes land at position
0 of unused rows and their expert counts are masked out.

Each MoE layer hands its routed tokens to an ``ExpertExecutor``: the model's own expert modules
(monolithic; the Triton-language kernels on CUDA through ``ocrstream.kernels.dispatch``) or
``ShardedExperts``, which groups assignments by shard, calls every shard once per layer and step
(tensors stay on the device) and sums the outputs per token in fp32 in expert order
(``moe_experts_modules_ref``'s order, so greedy output matches the in-process model).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch

from ocrstream.kernels import dispatch
from ocrstream.model.config import DecoderConfig
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.generation import left_pad
from ocrstream.model.moe_decoder import DeepseekV2MoE, KVCache, build_attn_mask, rotary_cos_sin
from ocrstream.serving.device import stage_to_device
from ocrstream.serving.placement import Placement, PlacementStore
from ocrstream.serving.sampling import NgramIndex, ban, choose_row

if TYPE_CHECKING:  # prometheus-client is only needed where load is counted
    from ocrstream.serving.metrics import ExpertLoad

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
    ngram_index: NgramIndex | None = None

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
    #: whether ``run`` is free of host synchronisation (a CUDA graph may capture it)
    capturable: bool

    def run(
        self,
        layer: int,
        x: torch.Tensor,
        ids: torch.Tensor,
        weights: torch.Tensor,
        count_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Σ_k w_k · expert_{ids_k}(x) for x [N, H], ids/weights [N, k] -> [N, H] in x.dtype.
        ``count_mask`` [N] (0/1) excludes padding rows from the load counts."""

    def between_steps(self) -> None:
        """Called with no forward pass in flight (placement switches, load flushes happen here)."""


class ModuleExperts:
    """Monolithic: the model's own expert modules (exactly the in-process computation).

    Load counts accumulate on the device (one scatter per layer, no sync) and reach ``load``
    between steps."""

    capturable = True

    def __init__(self, model: DeepseekOCRForCausalLM, load: ExpertLoad | None = None) -> None:
        self.layers = {
            i: layer.mlp for i, layer in enumerate(model.model.layers) if isinstance(layer.mlp, DeepseekV2MoE)
        }
        self.load = load
        self._pending: dict[int, torch.Tensor] = {}

    def run(
        self,
        layer: int,
        x: torch.Tensor,
        ids: torch.Tensor,
        weights: torch.Tensor,
        count_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mlp = self.layers[layer]
        if self.load is not None:
            buf = self._pending.get(layer)
            if buf is None or buf.device != x.device:
                buf = self._pending[layer] = torch.zeros(len(mlp.experts), dtype=torch.long, device=x.device)
            flat = ids.reshape(-1).long()
            src = (
                torch.ones_like(flat)
                if count_mask is None
                else count_mask.long()[:, None].expand(ids.shape).reshape(-1)
            )
            buf.scatter_add_(0, flat, src)
        return dispatch.moe_experts_modules(x, mlp.experts, ids, weights)

    def pending(self) -> list[torch.Tensor]:
        return [b.clone() for b in self._pending.values()]

    def restore(self, saved: list[torch.Tensor]) -> None:
        for b, s in zip(self._pending.values(), saved, strict=True):
            b.copy_(s)

    def between_steps(self) -> None:
        if self.load is None or not self._pending:
            return
        layers = list(self._pending)
        counts = torch.stack([self._pending[i] for i in layers]).cpu().numpy()  # one transfer
        for buf in self._pending.values():
            buf.zero_()
        for i, c in zip(layers, counts, strict=True):
            if c.any():
                self.load.add(i, c)


class ShardTransport(Protocol):
    def call_many(
        self, layer: int, calls: list[tuple[int, torch.Tensor, torch.Tensor]]
    ) -> list[torch.Tensor]:
        """For each (shard, rows [n, H], expert ids [n]): expert_{id}(row) per row, all shards at once."""


class ShardedExperts:
    """Routes assignments to shards by the current placement; follows the store's active version.

    The routing bookkeeping (which assignment goes to which shard) runs on the host from one small
    copy of the expert ids; the rows and the outputs stay on the activations' device."""

    capturable = False  # every layer waits on shard round trips

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

    def run(
        self,
        layer: int,
        x: torch.Tensor,
        ids: torch.Tensor,
        weights: torch.Tensor,
        count_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if count_mask is not None:
            raise ValueError("sharded experts run exact batches only (no padding rows)")
        n, k = ids.shape
        dev = x.device
        n_experts = self.placement.n_experts
        flat_idx = ids.reshape(-1).long().cpu()  # [n*k] on the host: the only transfer of the layer
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
        token_of_dev, order_dev = token_of.to(dev), order.to(dev)
        calls, picks = [], []
        ordered_shard = shard_of[order]
        for s in range(self.placement.n_shards):
            a = order[ordered_shard == s]  # this shard's assignments, in expert order
            if a.numel():
                a_dev = a.to(dev)
                calls.append((s, x[token_of_dev[a_dev]], flat_idx[a]))
                picks.append(a_dev)
        outs = self.transport.call_many(layer, calls)
        y = torch.empty(n * k, x.shape[1], dtype=x.dtype, device=dev)
        for a, out, (s, rows, _) in zip(picks, outs, calls, strict=True):
            if out.shape != rows.shape:
                raise RuntimeError(
                    f"shard {s} layer {layer}: got {tuple(out.shape)} for {tuple(rows.shape)} rows"
                )
            y[a] = out.to(dev, x.dtype)
            if self.load is not None:
                self.load.add_shard(s, int(a.numel()))
        if self.load is not None:
            self.load.add(layer, counts.numpy())
        out = torch.zeros(n, x.shape[1], dtype=torch.float32, device=dev)
        start = 0
        for c in counts.tolist():
            if c == 0:
                continue
            sel = order_dev[start : start + c]
            start += c
            out.index_add_(0, token_of_dev[sel], y[sel].float() * flat_w[sel, None])
        return out.to(x.dtype)


# ---- the batch's keys/values -------------------------------------------------------------------
DEFAULT_CPU_KV_BYTES = 512 * 2**20  # CPU pool budget when none is configured
MIN_KV_LEN = 32


@dataclass(frozen=True)
class KVPlan:
    """Rows x tokens of the KV pool and where its size came from."""

    rows: int
    max_len: int  # tokens per row: prompt + generated
    bytes_per_token: int  # keys + values of one token over all layers
    budget_bytes: int
    source: str

    @property
    def total_bytes(self) -> int:
        return self.rows * self.max_len * self.bytes_per_token


def plan_kv(
    d: DecoderConfig,
    dtype: torch.dtype,
    device: torch.device,
    rows: int,
    budget_bytes: int = 0,
    mem_fraction: float = 0.9,
    max_len: int = 0,
) -> KVPlan:
    """Size the pool: ``rows`` rows of as many tokens as the budget holds, at most the model's
    ``max_position_embeddings`` (or ``max_len``). Budget: ``budget_bytes`` if set, else
    ``mem_fraction`` of the GPU's free memory, else ``DEFAULT_CPU_KV_BYTES`` on the CPU."""
    if rows < 1:
        raise ValueError(f"the KV pool needs at least one row, got {rows}")
    per_token = (
        2
        * d.num_hidden_layers
        * d.num_key_value_heads
        * d.head_dim
        * torch.empty(0, dtype=dtype).element_size()
    )
    cap = min(max_len or d.max_position_embeddings, d.max_position_embeddings)
    if budget_bytes > 0:
        budget, source = budget_bytes, "configured budget"
    elif device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        budget, source = (
            int(free * mem_fraction),
            f"{mem_fraction:.0%} of {free / 2**30:.1f} GiB free on {device}",
        )
    else:
        budget, source = DEFAULT_CPU_KV_BYTES, "default CPU budget"
    fit = budget // (rows * per_token)
    if fit < MIN_KV_LEN:
        raise ValueError(
            f"KV budget of {budget / 2**20:.0f} MiB ({source}) holds {fit} tokens per row for {rows} rows "
            f"at {per_token} bytes/token; at least {MIN_KV_LEN} are needed: raise kv_cache_mb or lower max_batch"
        )
    return KVPlan(rows, min(cap, fit), per_token, budget, source)


class KVPool:
    """Preallocated keys/values [rows, kv_heads, max_len, hd] per layer; running rows are 0..n-1,
    row i holding ``host_lengths[i]`` tokens from position 0 (mirrored in ``lengths`` on the device,
    a static tensor CUDA graphs read)."""

    def __init__(
        self,
        plan: KVPlan,
        n_layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (plan.rows, kv_heads, plan.max_len, head_dim)
        self.plan = plan
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.lengths = torch.zeros(plan.rows, dtype=torch.long, device=device)
        self.positions = torch.arange(plan.max_len, device=device)
        self.row_ids = torch.arange(plan.rows, device=device)
        self.host_lengths: list[int] = []
        self.device = device

    @property
    def n(self) -> int:
        return len(self.host_lengths)

    def _sync_lengths(self) -> None:
        full = self.host_lengths + [0] * (self.plan.rows - self.n)  # free rows at 0 (padding writes)
        self.lengths.copy_(torch.tensor(full, dtype=torch.long))

    def add(self, cache: KVCache, lengths: Sequence[int]) -> None:
        """Append the rows of a left-padded prefill cache (each row's real tokens end its width)."""
        start, width = self.n, cache.length
        if start + len(lengths) > self.plan.rows:
            raise ValueError(f"{start} + {len(lengths)} rows exceed the pool's {self.plan.rows}")
        for layer in range(len(self.k)):
            for j, m in enumerate(lengths):
                self.k[layer][start + j, :, :m] = cache.k[layer][j, :, width - m : width]  # type: ignore[index]
                self.v[layer][start + j, :, :m] = cache.v[layer][j, :, width - m : width]  # type: ignore[index]
        self.host_lengths.extend(int(m) for m in lengths)
        self._sync_lengths()

    def keep(self, rows: Sequence[int]) -> list[int]:
        """Keep ``rows`` (running-row indices, ascending): survivors are compacted into 0..m-1 by
        moving rows from the end into the holes. Returns, per new row, the old row it holds."""
        m = len(rows)
        kept = set(rows)
        holes = [p for p in range(m) if p not in kept]
        movers = [r for r in rows if r >= m]
        order = list(range(m))
        if holes:
            end = max(self.host_lengths[r] for r in movers)
            dst = torch.tensor(holes, device=self.device)
            src = torch.tensor(movers, device=self.device)
            for layer in range(len(self.k)):
                self.k[layer][dst, :, :end] = self.k[layer][src, :, :end]
                self.v[layer][dst, :, :end] = self.v[layer][src, :, :end]
            for p, r in zip(holes, movers, strict=True):
                order[p] = r
        self.host_lengths = [self.host_lengths[r] for r in order]
        self._sync_lengths()
        return order

    def advance(self) -> None:
        """Every running row got one more token."""
        self.lengths[: self.n] += 1
        self.host_lengths = [n + 1 for n in self.host_lengths]

    def clear(self) -> None:
        self.host_lengths = []
        self._sync_lengths()


class _DecodeView:
    """The attention's cache hook for one decode pass over pool rows 0..b-1: row i's new key goes
    to position lengths[i]; attention reads the first ``end`` positions of every row."""

    def __init__(self, pool: KVPool, b: int, end: int) -> None:
        self.pool, self.b, self.end = pool, b, end
        self.rows, self.pos = pool.row_ids[:b], pool.lengths[:b]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kk, vv = self.pool.k[layer], self.pool.v[layer]
        kk[self.rows, :, self.pos] = k[:, :, 0]
        vv[self.rows, :, self.pos] = v[:, :, 0]
        return kk[: self.b, :, : self.end], vv[: self.b, :, : self.end]


def batch_buckets(rows: int) -> list[int]:
    """Padded batch sizes of static decode passes: powers of two up to ``rows``, and ``rows``."""
    out, b = [], 1
    while b < rows:
        out.append(b)
        b *= 2
    return out + [rows]


class DecodeGraphs:
    """CUDA graphs of the static decode pass, one per (batch bucket, length bucket), captured on
    first use. With ``measure`` a graph is kept only where its replay beat the eager pass (median
    of a few runs, CUDA events); otherwise that bucket stays eager. A capture that fails (an op
    that synchronises) turns graphs off for good, logged."""

    def __init__(self, engine: Engine, measure: bool = True, reps: int = 3) -> None:
        self.engine, self.measure, self.reps = engine, measure, reps
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.eager: set[tuple[int, int]] = set()
        self.disabled = ""
        self.timings: dict[tuple[int, int], tuple[float, float]] = {}  # (eager ms, graph ms)
        self.pool = torch.cuda.graph_pool_handle()

    def run(self, b: int, end: int) -> torch.Tensor:
        key = (b, end)
        hit = self.graphs.get(key)
        if hit is not None:
            hit[0].replay()
            return hit[1].clone()  # the output buffer is overwritten by the next replay
        if self.disabled or key in self.eager:
            return self.engine._decode_pass(b, end)
        return self._capture(b, end)

    def _time(self, fn: Callable[[], object]) -> float:
        times = []
        for _ in range(self.reps):
            t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0.record()
            fn()
            t1.record()
            t1.synchronize()
            times.append(t0.elapsed_time(t1))
        return sorted(times)[len(times) // 2]

    def _capture(self, b: int, end: int) -> torch.Tensor:
        eng, key = self.engine, (b, end)
        # Re-running the pass is exact (keys land at the same positions); only the expert load
        # counts would double, so they are saved and restored around the trial runs.
        saved = eng.experts.pending() if hasattr(eng.experts, "pending") else None
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: Triton compiles, cuBLAS workspaces
                for _ in range(2):
                    eng._decode_pass(b, end)
            torch.cuda.current_stream().wait_stream(side)
            eager_ms = self._time(lambda: eng._decode_pass(b, end)) if self.measure else 0.0
            graph = torch.cuda.CUDAGraph()
            # thread_local: the server's execute thread may upload vision tokens meanwhile
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                out = eng._decode_pass(b, end)
            graph_ms = self._time(graph.replay) if self.measure else 0.0
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run eagerly
            self.disabled = f"{type(exc).__name__}: {exc}"
            log.warning("CUDA graph capture failed at batch %d, length %d; decoding eagerly: %s", b, end, exc)
            torch.cuda.synchronize()
            if saved is not None:
                eng.experts.restore(saved)
            return eng._decode_pass(b, end)
        self.timings[key] = (eager_ms, graph_ms)
        if self.measure and graph_ms >= eager_ms:
            self.eager.add(key)
            log.info(
                "batch %d length %d: eager %.3f ms <= graph %.3f ms, kept eager", b, end, eager_ms, graph_ms
            )
        else:
            self.graphs[key] = (graph, out)
            log.info("batch %d length %d: graph %.3f ms vs eager %.3f ms", b, end, graph_ms, eager_ms)
        if saved is not None:
            eng.experts.restore(saved)
        return self.run(b, end)


# ---- the engine ---------------------------------------------------------------------------------
class Engine:
    """Runs many pages' generations as one batch that pages join and leave between steps.

    ``kv_budget_bytes``/``kv_mem_fraction``/``max_len`` size the KV pool (``plan_kv``; allocated at
    the first admission, so models loading beside it on the same GPU have taken their memory).
    ``static_shapes`` (default: on where CUDA graphs are used) pads decode passes to buckets;
    ``cuda_graphs`` = ``auto`` (capture on CUDA where the experts allow it, keep the faster of graph
    and eager per bucket) | ``on`` (capture without measuring) | ``off``.
    """

    def __init__(
        self,
        model: DeepseekOCRForCausalLM,
        experts: ExpertExecutor,
        max_batch: int = 32,
        load: ExpertLoad | None = None,
        kv_budget_bytes: int = 0,
        kv_mem_fraction: float = 0.9,
        max_len: int = 0,
        cuda_graphs: str = "auto",
        static_shapes: bool | None = None,
        len_bucket: int = 256,
    ) -> None:
        if cuda_graphs not in ("auto", "on", "off"):
            raise ValueError(f"cuda_graphs must be auto, on or off, got {cuda_graphs!r}")
        self.model = model
        self.cfg = model.config
        self.device = model.device
        self.experts = experts
        self.max_batch = max_batch
        self.load = load
        self.kv_budget_bytes, self.kv_mem_fraction, self.max_len = kv_budget_bytes, kv_mem_fraction, max_len
        self.len_bucket = len_bucket
        m = model.model
        self.layers = list(m.layers)
        self.moe = {i for i, layer in enumerate(self.layers) if isinstance(layer.mlp, DeepseekV2MoE)}
        graphs_possible = self.device.type == "cuda" and experts.capturable and self._kernels_capturable()
        if cuda_graphs == "on" and not graphs_possible:
            raise ValueError(
                "cuda_graphs=on needs a CUDA model, monolithic experts and the Triton kernels "
                f"(device {self.device}, experts {type(experts).__name__}, {dispatch.ENV_VAR}={dispatch.backend()})"
            )
        self.use_graphs = cuda_graphs != "off" and graphs_possible
        self.static_shapes = self.use_graphs if static_shapes is None else static_shapes
        if self.static_shapes and not experts.capturable:
            raise ValueError(f"static decode shapes need monolithic experts, got {type(experts).__name__}")
        self.graphs: DecodeGraphs | None = None
        self._graph_measure = cuda_graphs == "auto"
        self.active: list[GenRequest] = []
        self.pending_logits: torch.Tensor | None = None  # [n, V] fp32 for self.active
        self.plan: KVPlan | None = None
        self.kv: KVPool | None = None
        self._plan_lock = threading.Lock()
        self._waiting: deque[GenRequest] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._needs_forward = False  # tokens chosen, their forward pass not done yet
        self._feed: list[int] = []  # the chosen token of each running row
        self._feed_buf = torch.zeros(max_batch, dtype=torch.long, device=self.device)  # static
        self._row_mask = torch.zeros(max_batch, dtype=torch.long, device=self.device)  # static
        self.max_step_retries = 2
        self.steps = 0
        self.step_seconds = 0.0

    def _kernels_capturable(self) -> bool:
        # The PyTorch reference MoE loop syncs on expert counts; the Triton kernels do not.
        probe = torch.empty(1, device=self.device)
        return dispatch.use_triton(probe)

    # ---- public -------------------------------------------------------------------------------
    def kv_plan(self) -> KVPlan:
        with self._plan_lock:
            if self.plan is None:
                d = self.cfg.decoder
                self.plan = plan_kv(
                    d,
                    self.model.dtype,
                    self.device,
                    self.max_batch,
                    self.kv_budget_bytes,
                    self.kv_mem_fraction,
                    self.max_len,
                )
                log.info(
                    "KV pool: %d rows x %d tokens, %.0f MiB (%s)",
                    self.plan.rows,
                    self.plan.max_len,
                    self.plan.total_bytes / 2**20,
                    self.plan.source,
                )
            return self.plan

    def submit(self, req: GenRequest) -> None:
        d = self.cfg.decoder
        req.validate(d.vocab_size, d.hidden_size, self.cfg.image_token_id)
        max_len = self.kv_plan().max_len
        if len(req.input_ids) >= max_len:
            raise ValueError(
                f"request {req.rid}: prompt of {len(req.input_ids)} tokens does not fit a KV row of "
                f"{max_len} tokens (raise kv_cache_mb / max_seq_len, or lower max_batch)"
            )
        if len(req.input_ids) + req.max_new_tokens > max_len:
            log.info(
                "request %s: max_new_tokens %d cut to %d by the KV row of %d tokens",
                req.rid,
                req.max_new_tokens,
                max_len - len(req.input_ids),
                max_len,
            )
            req.max_new_tokens = max_len - len(req.input_ids)
        if req.temperature > 0:
            req.generator = torch.Generator().manual_seed(
                req.seed if req.seed is not None else int(time.time_ns() % 2**63)
            )
        if req.ngram is not None:
            req.ngram_index = NgramIndex(req.ngram[0], req.ngram[1], req.ngram_whitelist)
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

    def warm_up(self, batch: int, tokens: int) -> int:
        """Capture (and measure) the CUDA graphs that ``batch`` pages of up to ``tokens`` tokens
        each will replay, so no capture happens mid-run. Only while idle (the passes run on free
        pool rows); a no-op without graphs. Returns the number of buckets prepared."""
        if not self.use_graphs or not self.idle():
            return 0
        pool = self._pool()
        assert self.graphs is not None
        b = next(s for s in batch_buckets(pool.plan.rows) if s >= min(batch, pool.plan.rows))
        self._row_mask.zero_()  # nothing counted: no real rows
        ends = sorted(
            {
                min(pool.plan.max_len, e)
                for e in range(self.len_bucket, tokens + self.len_bucket, self.len_bucket)
            }
        )
        with torch.no_grad():
            for end in ends:
                self.graphs.run(b, end)
        self.experts.between_steps()
        return len(ends)

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
                if self.kv is not None:
                    self.kv.clear()
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
                self._shrink(*self._sample())
        if self._needs_forward:
            self._forward()
            self._needs_forward = False
        if not self.active:
            self.experts.between_steps()  # idle: flush the last step's load counts
        self.steps += 1
        self.step_seconds += time.perf_counter() - t0

    def _pool(self) -> KVPool:
        if self.kv is None:
            d = self.cfg.decoder
            self.kv = KVPool(
                self.kv_plan(),
                len(self.layers),
                d.num_key_value_heads,
                d.head_dim,
                self.model.dtype,
                self.device,
            )
            if self.use_graphs:
                self.graphs = DecodeGraphs(self, measure=self._graph_measure)
        return self.kv

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
            pool = self._pool()
            logits, cache = self._prefill(joiners)
            pool.add(cache, [len(r.input_ids) for r in joiners])
        except Exception as exc:  # only the joiners fail; the running batch is untouched
            log.exception("prefill of %d joining pages failed", len(joiners))
            for r in joiners:
                self._finish(r, exc)
            return
        self.active.extend(joiners)
        self.pending_logits = (
            logits if self.pending_logits is None else torch.cat([self.pending_logits, logits])
        )

    def _sample(self) -> tuple[list[int], list[int]]:
        """Choose each row's token from its pending logits; finished rows leave.
        -> (rows kept, their tokens)."""
        logits = self.pending_logits
        assert logits is not None
        ban(logits, [r.ngram_index.banned() if r.ngram_index is not None else set() for r in self.active])
        greedy = logits.argmax(dim=-1).tolist()  # the step's one device -> host transfer
        keep, tokens = [], []
        for i, r in enumerate(self.active):
            tok = (
                greedy[i]
                if r.temperature == 0
                else choose_row(logits[i], r.temperature, r.top_p, r.generator)
            )
            cancelled = r.is_cancelled is not None and r.is_cancelled()
            if tok in r.stop_ids:
                r.stopped = True
            else:
                r.generated.append(tok)
                if r.ngram_index is not None:
                    r.ngram_index.append(tok)
                if r.on_token is not None and not cancelled:
                    r.on_token(r, tok)
            if r.stopped or cancelled or len(r.generated) >= r.max_new_tokens:
                self._finish(r, GenResult(list(r.generated), r.stopped))
            else:
                keep.append(i)
                tokens.append(tok)
        return keep, tokens

    def _shrink(self, keep: list[int], tokens: list[int]) -> None:
        """Drop the rows that left (compacting the pool); the rest need a forward pass."""
        by_row = dict(zip(keep, tokens, strict=True))
        order = keep
        if len(keep) != len(self.active):
            assert self.kv is not None
            order = self.kv.keep(keep)
            self.active = [self.active[i] for i in order]
        self._feed = [by_row[i] for i in order]
        if not self.active:
            self.pending_logits = None
        self._needs_forward = bool(self.active)

    def _forward(self) -> None:
        pool = self.kv
        assert pool is not None
        n = pool.n
        self._feed_buf[:n].copy_(torch.tensor(self._feed, dtype=torch.long))
        end = max(pool.host_lengths) + 1  # the new key included
        if self.static_shapes:
            b = next(s for s in batch_buckets(pool.plan.rows) if s >= n)
            end = min(pool.plan.max_len, -(-end // self.len_bucket) * self.len_bucket)
            self._row_mask.copy_((torch.arange(self.max_batch) < n).long())
            logits = self.graphs.run(b, end) if self.graphs is not None else self._decode_pass(b, end)
            logits = logits[:n]
        else:
            logits = self._decode_pass(n, end)
        pool.advance()
        self.pending_logits = logits
        if self.load is not None:
            self.load.steps.labels("decode").inc()

    def _decode_pass(self, b: int, end: int) -> torch.Tensor:
        """Logits [b, V] (fp32) for pool rows 0..b-1 fed ``_feed_buf[:b]``. No host sync inside
        (CUDA graphs capture this), given capturable experts and kernels."""
        d = self.cfg.decoder
        pool = self.kv
        assert pool is not None
        x = self.model.model.embed_tokens(self._feed_buf[:b, None])  # [b, 1, H]
        lengths = pool.lengths[:b]
        cos, sin = rotary_cos_sin(lengths[:, None], d.head_dim, d.rope_theta, x.dtype)
        mask = (pool.positions[:end][None, :] <= lengths[:, None])[:, None, None, :]  # [b, 1, 1, end]
        count_mask = self._row_mask[:b] if self.static_shapes else None
        hidden = self._layers(x, cos, sin, mask, _DecodeView(pool, b, end), None, count_mask)
        return self.model.lm_head(hidden[:, -1]).float()

    def _prefill(self, reqs: Sequence[GenRequest]) -> tuple[torch.Tensor, KVCache]:
        d = self.cfg.decoder
        ids, valid = left_pad([r.input_ids for r in reqs], d.pad_token_id, self.device)
        embeds = [
            stage_to_device(r.image_embeds, self.device, self.model.dtype)
            for r in reqs
            if r.image_embeds is not None and r.image_embeds.shape[0]
        ]
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
        return self.model.lm_head(hidden[:, -1]).float(), cache

    def _layers(self, x, cos, sin, mask, cache, valid_flat, count_mask=None):  # noqa: ANN001 - hot path
        for i, layer in enumerate(self.layers):
            h = x + layer.self_attn(layer.input_layernorm(x), cos, sin, mask, cache)
            y = layer.post_attention_layernorm(h)
            x = h + (self._moe(i, layer.mlp, y, valid_flat, count_mask) if i in self.moe else layer.mlp(y))
        return self.model.model.norm(x)

    def _moe(
        self,
        i: int,
        mlp: DeepseekV2MoE,
        y: torch.Tensor,
        valid_flat: torch.Tensor | None,
        count_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        shape = y.shape
        flat = y.reshape(-1, shape[-1])  # [N, H]
        g = mlp.gate
        route = dispatch.moe_route(flat, g.weight, g.top_k, g.norm_topk_prob, g.scaling)
        ids, w = route.topk_ids.long(), route.topk_weights
        if valid_flat is None or bool(valid_flat.all()):
            routed = self.experts.run(i, flat, ids, w, count_mask)
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
