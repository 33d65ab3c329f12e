"""The continuous-batching engine against the in-process generator (no server): monolithic and
sharded experts (K = 1, 2, 4, replicated placements), pages joining mid-run, placement switches
between steps, expert load accounting."""

from __future__ import annotations

import pytest
import torch

from ocrstream.model.generation import SamplingParams, generate
from ocrstream.serving import eplb
from ocrstream.serving.engine import Engine, GenRequest, ModuleExperts, ShardedExperts
from ocrstream.serving.expert_shard import ExpertNotHeld, ExpertShard, LocalTransport
from ocrstream.serving.metrics import ExpertLoad, parse_counts
from ocrstream.serving.placement import FilePlacementStore, Placement, contiguous_placement
from tests.serving.helpers import fresh_seed, random_prompts, tiny_model

torch.set_num_threads(1)
MAX_NEW = 14
NGRAM = (3, 12)


@pytest.fixture(scope="module")
def setup():
    model = tiny_model(fresh_seed())
    gen = torch.Generator().manual_seed(fresh_seed())
    rows, embeds = random_prompts(model, 7, gen)
    stop = frozenset({model.config.decoder.eos_token_id})
    ref = generate(
        model, rows, [[e] for e in embeds], SamplingParams(MAX_NEW, ngram=NGRAM, stop_ids=tuple(stop))
    )
    return model, rows, embeds, stop, ref


def _moe_layers(model) -> list[int]:
    d = model.config.decoder
    return [i for i in range(d.num_hidden_layers) if d.is_moe_layer(i)]


def _shards(model, placements: list[Placement], n_shards: int) -> list[ExpertShard]:
    layers = model.model.layers
    out = []
    for s in range(n_shards):
        held = {(layer, e) for p in placements for layer, es in p.shard_experts(s).items() for e in es}
        w = {}
        for layer, e in held:
            ex = layers[layer].mlp.experts[e]
            w[(layer, e)] = (ex.gate_proj.weight.data, ex.up_proj.weight.data, ex.down_proj.weight.data)
        out.append(ExpertShard(s, w))
    return out


def _run(engine: Engine, rows, embeds, stop, join_after: int = 3, on_step=None):
    """Submit half the pages, run a few steps, submit the rest (they join the running batch)."""
    results = {}

    def done(req, res):
        results[req.rid] = res

    def submit(i):
        engine.submit(GenRequest(str(i), rows[i], embeds[i], MAX_NEW, stop, ngram=NGRAM, on_done=done))

    half = len(rows) // 2
    for i in range(half):
        submit(i)
    for n in range(join_after):
        engine.step()
        if on_step is not None:
            on_step(n)
    for i in range(half, len(rows)):
        submit(i)
    while not engine.idle():
        engine.step()
    return [results[str(i)] for i in range(len(rows))]


def _check(out, ref):
    assert [r.token_ids for r in out] == ref.sequences
    assert [r.stopped for r in out] == ref.stopped


def test_monolithic_engine_matches_generate(setup):
    model, rows, embeds, stop, ref = setup
    _check(_run(Engine(model, ModuleExperts(model), max_batch=4), rows, embeds, stop), ref)


@pytest.mark.parametrize("n_shards", [1, 2, 4])
def test_sharded_engine_matches_generate(setup, n_shards):
    model, rows, embeds, stop, ref = setup
    d = model.config.decoder
    p = contiguous_placement(d.n_routed_experts, _moe_layers(model), n_shards)
    load = ExpertLoad(_moe_layers(model), d.n_routed_experts)
    engine = Engine(
        model,
        ShardedExperts(LocalTransport(_shards(model, [p], n_shards)), p, load=load),
        max_batch=5,
        load=load,
    )
    out = _run(engine, rows, embeds, stop)
    _check(out, ref)
    # accounting: k assignments per token that went through each MoE layer
    choices = [len(r.token_ids) + int(r.stopped) for r in out]
    tokens = sum(len(r) for r in rows) + sum(c - 1 for c in choices)
    snap = load.snapshot()
    assert {layer: sum(c) for layer, c in snap.items()} == {
        layer: tokens * d.num_experts_per_tok for layer in snap
    }
    assert parse_counts(load.exposition().decode(), d.n_routed_experts) == {
        k: v for k, v in snap.items() if sum(v)
    }


def test_replicated_placement_and_switch_between_steps(setup, tmp_path):
    model, rows, embeds, stop, ref = setup
    d = model.config.decoder
    layers = _moe_layers(model)
    p1 = contiguous_placement(d.n_routed_experts, layers, 3)
    hot = {layer: [100.0 if e < 2 else 1.0 for e in range(d.n_routed_experts)] for layer in layers}
    p2 = eplb.plan(hot, 3, slots_per_shard=4, version=2)
    assert any(len(r) > 1 for r in p2.replicas(layers[0]))  # replicas in play
    store = FilePlacementStore(tmp_path / "pl")
    store.put(p1)
    store.put(p2)
    store.set_active(1)
    shards = _shards(model, [p1, p2], 3)  # shards hold the union during the move
    experts = ShardedExperts(LocalTransport(shards, threads=2), p1, store)
    seen = []

    def on_step(n):
        seen.append(experts.placement.version)
        if n == 1:
            store.set_active(2)

    out = _run(Engine(model, experts, max_batch=3), rows, embeds, stop, join_after=4, on_step=on_step)
    _check(out, ref)
    assert seen[0] == 1 and experts.placement.version == 2


def test_shard_refuses_an_expert_it_does_not_hold(setup):
    model, *_ = setup
    p = contiguous_placement(model.config.decoder.n_routed_experts, _moe_layers(model), 2)
    shard = _shards(model, [p], 2)[0]
    layer = _moe_layers(model)[0]
    foreign = p.experts_on(1, layer)[0]
    with pytest.raises(ExpertNotHeld, match=f"does not hold expert {foreign} of layer {layer}"):
        shard.compute(
            layer, torch.randn(2, model.config.decoder.hidden_size), torch.tensor([foreign, foreign])
        )


def test_bad_requests_are_refused_with_their_values(setup):
    model, rows, embeds, stop, _ = setup
    engine = Engine(model, ModuleExperts(model))
    with pytest.raises(ValueError, match="placeholders but 0 image embeddings"):
        engine.submit(GenRequest("x", rows[0], None, 4, stop))
    with pytest.raises(ValueError, match=r"token ids \[100000\] outside"):
        engine.submit(GenRequest("y", [100000], None, 4, stop))
    assert engine.idle()


class _FlakyTransport(LocalTransport):
    """Real shards behind a switch: while ``down``, every call fails like an unreachable shard."""

    down = False

    def call_many(self, layer, calls):
        if self.down:
            raise RuntimeError("shard unreachable")
        return super().call_many(layer, calls)


def test_failed_prefill_fails_only_the_joiners(setup):
    model, rows, embeds, stop, ref = setup
    d = model.config.decoder
    p = contiguous_placement(d.n_routed_experts, _moe_layers(model), 2)
    transport = _FlakyTransport(_shards(model, [p], 2))
    engine = Engine(model, ShardedExperts(transport, p), max_batch=8)
    results = {}

    def done(req, res):
        results[req.rid] = res

    # the running page is the one the reference decodes longest: a random model may stop a page
    # after a token or two, and a page that has finished has no decode step left to fail
    a, b, c = sorted(range(len(rows)), key=lambda i: -len(ref.sequences[i]))[:3]
    assert len(ref.sequences[a]) > 3, [len(s) for s in ref.sequences]
    engine.submit(GenRequest("0", rows[a], embeds[a], MAX_NEW, stop, ngram=NGRAM, on_done=done))
    engine.step()  # page 0 is running
    transport.down = True
    engine.submit(GenRequest("1", rows[b], embeds[b], MAX_NEW, stop, ngram=NGRAM, on_done=done))
    with pytest.raises(RuntimeError, match="shard unreachable"):
        engine.step()  # the joiner's prefill fails, then the running page's decode step
    assert isinstance(results.pop("1"), RuntimeError)
    transport.down = False
    engine.submit(GenRequest("2", rows[c], embeds[c], MAX_NEW, stop, ngram=NGRAM, on_done=done))
    while not engine.idle():
        engine.step()
    assert results["0"].token_ids == ref.sequences[a]  # the decode step re-ran: KV writes are positional
    assert results["2"].token_ids == ref.sequences[c]
