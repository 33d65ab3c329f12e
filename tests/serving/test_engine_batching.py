"""Acceptance for continuous batching in the device-generic engine (issue 15), tiny random model,
fresh random requests and join schedules every run:

- each request gives the same tokens when pages join and leave the running batch per step as when
  it runs alone, for monolithic experts, expert shards, and the static (CUDA-graph) decode shapes;
- a request joining a running batch does not change the running requests' outputs;
- the preallocated KV pool is sized from its budget, refuses prompts that do not fit and cuts
  budgets that do not; static shapes count expert load without the padding rows;
- the incremental n-gram rule equals ``generation.ngram_banned_tokens``.

On a machine with a GPU the same checks also run on CUDA (Triton kernels, CUDA graphs)."""

from __future__ import annotations

import random

import pytest
import torch

from ocrstream.model.generation import ngram_banned_tokens
from ocrstream.serving.engine import Engine, GenRequest, ModuleExperts, ShardedExperts, plan_kv
from ocrstream.serving.expert_shard import ExpertShard, LocalTransport
from ocrstream.serving.metrics import ExpertLoad
from ocrstream.serving.placement import contiguous_placement
from ocrstream.serving.sampling import NgramIndex
from tests.serving.helpers import fresh_seed, random_prompts, tiny_model

torch.set_num_threads(1)
CUDA = torch.cuda.is_available()
KINDS = ["monolithic", "sharded", "static"] + (["cuda-graphs"] if CUDA else [])


@pytest.fixture(scope="module")
def model():
    m = tiny_model(fresh_seed())
    with torch.no_grad():  # sharp attention: a wrong key or position shows in the tokens
        for layer in m.model.layers:
            layer.self_attn.q_proj.weight.normal_(std=0.4)
            layer.self_attn.k_proj.weight.normal_(std=0.4)
    return m


def _moe_layers(model) -> list[int]:
    d = model.config.decoder
    return [i for i in range(d.num_hidden_layers) if d.is_moe_layer(i)]


def _engine(model, kind: str, max_batch: int = 6, load: ExpertLoad | None = None, **kw) -> Engine:
    if kind == "sharded":
        d = model.config.decoder
        p = contiguous_placement(d.n_routed_experts, _moe_layers(model), 2)
        layers = model.model.layers
        shards = []
        for s in range(2):
            w = {}
            for layer, es in p.shard_experts(s).items():
                for e in es:
                    ex = layers[layer].mlp.experts[e]
                    w[(layer, e)] = (
                        ex.gate_proj.weight.data,
                        ex.up_proj.weight.data,
                        ex.down_proj.weight.data,
                    )
            shards.append(ExpertShard(s, w))
        return Engine(model, ShardedExperts(LocalTransport(shards), p, load=load), max_batch, load, **kw)
    if kind == "static":  # the bucketed, sync-free decode pass that CUDA graphs capture, run eagerly
        return Engine(
            model, ModuleExperts(model, load), max_batch, load, static_shapes=True, len_bucket=8, **kw
        )
    if kind == "cuda-graphs":
        return Engine(model, ModuleExperts(model, load), max_batch, load, cuda_graphs="auto", **kw)
    return Engine(model, ModuleExperts(model, load), max_batch, load, **kw)


def _model_for(model, kind: str):
    return model if kind != "cuda-graphs" else _cuda_model(model)


_CUDA_MODELS: dict[int, object] = {}


def _cuda_model(model):
    import copy

    key = id(model)
    if key not in _CUDA_MODELS:
        # fp32 on the GPU too: bf16 GEMMs of other batch sizes may round differently (no batch
        # invariance is promised there), which would make token equality a matter of luck
        _CUDA_MODELS[key] = copy.deepcopy(model).to("cuda")
    return _CUDA_MODELS[key]


def _specs(model, n: int, gen: torch.Generator) -> list[dict]:
    """n requests: different prompt lengths and budgets, n-gram rule on most, one sampled."""
    rows, embeds = random_prompts(model, n, gen)
    specs = []
    for i, (r, e) in enumerate(zip(rows, embeds, strict=True)):
        specs.append(
            {
                "rid": str(i),
                "ids": r,
                "embeds": e,
                "max_new": int(torch.randint(3, 17, (1,), generator=gen)),
                "ngram": (3, 12) if i % 3 else None,
                "temperature": 0.8 if i == n - 1 else 0.0,
                "seed": int(torch.randint(0, 2**31, (1,), generator=gen)),
            }
        )
    return specs


def _request(spec: dict, stop: frozenset, results: dict) -> GenRequest:
    def done(req, res):
        results[req.rid] = res

    return GenRequest(
        spec["rid"],
        spec["ids"],
        spec["embeds"],
        spec["max_new"],
        stop,
        temperature=spec["temperature"],
        ngram=spec["ngram"],
        seed=spec["seed"],
        on_done=done,
    )


def _alone(model, kind: str, specs: list[dict]) -> dict[str, tuple[list[int], bool]]:
    stop = frozenset({model.config.decoder.eos_token_id})
    out = {}
    for spec in specs:
        results: dict = {}
        engine = _engine(_model_for(model, kind), kind)
        engine.submit(_request(spec, stop, results))
        engine.run_until_idle()
        res = results[spec["rid"]]
        assert not isinstance(res, Exception), res
        out[spec["rid"]] = (res.token_ids, res.stopped)
    return out


def _together(engine: Engine, model, specs: list[dict], schedule: dict[int, list[int]]):
    """Submit specs[i] before step s for every i in schedule[s]; run until all are done.
    -> (results by rid, rows in the batch after each step)."""
    stop = frozenset({model.config.decoder.eos_token_id})
    results: dict = {}
    sizes = []
    step = 0
    while step <= max(schedule) or not engine.idle():
        for i in schedule.get(step, []):
            engine.submit(_request(specs[i], stop, results))
        engine.step()
        sizes.append(len(engine.active))
        step += 1
    assert all(not isinstance(r, Exception) for r in results.values()), results
    return {rid: (r.token_ids, r.stopped) for rid, r in results.items()}, sizes


def _random_schedule(n: int, rng: random.Random, span: int = 6) -> dict[int, list[int]]:
    schedule: dict[int, list[int]] = {}
    for i in range(n):
        schedule.setdefault(0 if i == 0 else rng.randrange(span), []).append(i)
    return schedule


@pytest.mark.parametrize("kind", KINDS)
def test_continuous_batching_equals_one_at_a_time(model, kind):
    seed = fresh_seed()
    gen, rng = torch.Generator().manual_seed(seed), random.Random(seed)
    specs = _specs(model, 9, gen)
    alone = _alone(model, kind, specs)
    schedule = _random_schedule(len(specs), rng)
    engine = _engine(_model_for(model, kind), kind, max_batch=5)  # fewer rows than pages: some wait
    together, sizes = _together(engine, model, specs, schedule)
    assert together == alone, f"seed {seed}, schedule {schedule}"
    # it really was continuous batching: several rows at once, rows leaving while others ran on
    assert max(sizes) > 1, sizes
    assert any(0 < b < a for a, b in zip(sizes, sizes[1:], strict=False)), sizes
    if kind == "cuda-graphs":
        assert engine.graphs is not None and not engine.graphs.disabled, engine.graphs.disabled
        assert engine.graphs.graphs or engine.graphs.eager  # every bucket was captured and measured


@pytest.mark.parametrize("kind", KINDS)
def test_a_joining_request_does_not_change_the_running_ones(model, kind):
    seed = fresh_seed()
    gen = torch.Generator().manual_seed(seed)
    specs = _specs(model, 6, gen)
    for s in specs[:3]:
        s["max_new"] = 16  # the running pages outlive the joins
    running_alone, _ = _together(_engine(_model_for(model, kind), kind), model, specs[:3], {0: [0, 1, 2]})
    for join_at in (1, 3):
        engine = _engine(_model_for(model, kind), kind)
        out, sizes = _together(engine, model, specs, {0: [0, 1, 2], join_at: [3, 4, 5]})
        assert {k: out[k] for k in running_alone} == running_alone, f"seed {seed}, join at step {join_at}"
        assert max(sizes) > 3, sizes  # the joiners ran beside them


def test_static_shapes_count_expert_load_without_padding_rows(model):
    gen = torch.Generator().manual_seed(fresh_seed())
    specs = _specs(model, 5, gen)
    d = model.config.decoder
    counts = {}
    for kind in ("monolithic", "static"):
        load = ExpertLoad(_moe_layers(model), d.n_routed_experts)
        engine = _engine(model, kind, load=load)
        out, _ = _together(engine, model, specs, {0: [0, 1, 2, 3, 4]})
        counts[kind] = load.snapshot()
        # every token that went through a MoE layer: prompts, plus each fed choice
        fed = sum(len(s["ids"]) for s in specs) + sum(len(t) + int(st) - 1 for t, st in out.values())
        assert {layer: sum(c) for layer, c in counts[kind].items()} == {
            layer: fed * d.num_experts_per_tok for layer in counts[kind]
        }
    assert counts["static"] == counts["monolithic"]


def test_kv_pool_is_sized_from_the_budget_and_bounds_requests(model):
    d = model.config.decoder
    per_token = 2 * d.num_hidden_layers * d.num_key_value_heads * d.head_dim * 4  # fp32
    rows = random.Random(fresh_seed()).randint(2, 9)
    plan = plan_kv(d, torch.float32, torch.device("cpu"), rows, budget_bytes=rows * per_token * 40 + 7)
    assert (plan.rows, plan.max_len, plan.bytes_per_token) == (rows, 40, per_token)
    assert plan.total_bytes <= plan.budget_bytes
    big = plan_kv(d, torch.float32, torch.device("cpu"), rows, budget_bytes=2**40)
    assert big.max_len == d.max_position_embeddings  # never past the model's positions
    assert plan_kv(d, torch.float32, torch.device("cpu"), rows, max_len=100).max_len == 100
    with pytest.raises(
        ValueError, match=rf"holds 10 tokens per row for {rows} rows at {per_token} bytes/token"
    ):
        plan_kv(d, torch.float32, torch.device("cpu"), rows, budget_bytes=rows * per_token * 10)

    engine = Engine(model, ModuleExperts(model), max_batch=2, kv_budget_bytes=2 * per_token * 40)
    stop = frozenset({d.eos_token_id})
    gen = torch.Generator().manual_seed(fresh_seed())
    long_rows, long_embeds = random_prompts(model, 1, gen)
    too_long = long_rows[0] + [5] * (40 - len(long_rows[0]))
    with pytest.raises(ValueError, match="prompt of 40 tokens does not fit a KV row of 40 tokens"):
        engine.submit(GenRequest("long", too_long, long_embeds[0], 4, stop))
    results: dict = {}
    req = GenRequest(
        "cut", long_rows[0], long_embeds[0], 500, stop, on_done=lambda r, res: results.update(x=res)
    )
    engine.submit(req)
    assert req.max_new_tokens == 40 - len(long_rows[0])
    engine.run_until_idle()
    assert len(results["x"].token_ids) <= 40 - len(long_rows[0])


def test_incremental_ngram_rule_equals_the_scan():
    rng = random.Random(fresh_seed())
    for _ in range(40):
        n = rng.randint(1, 5)
        window = rng.randint(n, 14)
        whitelist = rng.sample(range(4), rng.randint(0, 2))
        index = NgramIndex(n, window, whitelist)
        tokens: list[int] = []
        for _ in range(rng.randint(0, 60)):
            assert index.banned() == ngram_banned_tokens(tokens, n, window, whitelist), (n, window, tokens)
            tok = rng.randrange(4)  # a small alphabet: repeats, hence bans, are common
            tokens.append(tok)
            index.append(tok)
        assert index.banned() == ngram_banned_tokens(tokens, n, window, whitelist)
