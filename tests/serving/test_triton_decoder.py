"""The decoder and its expert shards on a real tritonserver (CPU), against the in-process model.

Random tiny weights are saved to a temporary snapshot; each test writes its own models (generated
config.pbtxt per K) into the session server's repository and loads/unloads them explicitly.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from ocrstream.backends.triton import TritonDecoder
from ocrstream.errors import PermanentError
from ocrstream.model.runtime import OcrModel, VisionTokens
from ocrstream.serving import controller
from ocrstream.serving.launcher import free_port
from ocrstream.serving.metrics import PLACEMENT_VERSION, parse_gauge
from ocrstream.serving.placement import FilePlacementStore, contiguous_placement
from ocrstream.serving.repo import write_repository
from tests.serving.helpers import fresh_seed

pytestmark = pytest.mark.triton
torch.set_num_threads(1)
MAX_NEW = 24
NGRAM = (3, 12)


@pytest.fixture(scope="module")
def reference(tiny_snapshot):
    """(pages as VisionTokens bytes, in-process results) for the session's snapshot."""
    folder, _ = tiny_snapshot
    model = OcrModel.load(folder)
    gen = torch.Generator().manual_seed(fresh_seed())
    hidden = model.config.decoder.hidden_size
    vts = [
        VisionTokens(
            torch.randn(int(torch.randint(3, 12, (1,), generator=gen)), hidden, generator=gen),
            "tiny",
            (1, 1),
            (64, 64),
        )
        for _ in range(6)
    ]
    # reflowed pages: several views decoded one by one and joined, and a blank page with none
    per_view = int(torch.randint(3, 8, (1,), generator=gen))
    vts.insert(
        1,
        VisionTokens(
            torch.randn(3 * per_view, hidden, generator=gen), "reflow-64", (1, 1), (64, 64), views=3
        ),
    )
    vts.append(VisionTokens(torch.zeros(0, hidden), "reflow-64", (1, 1), (64, 64), views=0))
    ref = model.decode(vts, prompt="free_ocr", max_new_tokens=MAX_NEW, ngram=NGRAM)
    return [v.to_bytes() for v in vts], ref


def _same(out, ref) -> None:
    assert [o.token_ids for o in out] == [r.token_ids for r in ref]
    assert [o.text for o in out] == [r.text for r in ref]
    assert [(o.stopped, o.n_tokens) for o in out] == [(r.stopped, r.n_tokens) for r in ref]


@pytest.mark.parametrize("n_shards", [0, 1, 2, 4])
def test_sharded_greedy_output_equals_inprocess(triton, tiny_snapshot, reference, n_shards):
    folder, _ = tiny_snapshot
    pages, ref = reference
    dec_name = f"dec_k{n_shards}"
    names = write_repository(
        triton.model_repo, str(folder), n_shards, decoder=dec_name, shard_prefix=f"shard_k{n_shards}"
    )
    triton.load(names[1:] + names[:1])  # shards first: the decoder calls them from its first step
    try:
        client = TritonDecoder(triton.grpc_url, triton_model=dec_name)
        _same(client.decode(pages, "free_ocr", MAX_NEW, 0.0, NGRAM), ref)
        # decoupled streaming: the tokens arrive one by one, then the final result
        streamed = list(client.stream(pages[0], "free_ocr", MAX_NEW, 0.0, NGRAM))
        assert [t for t in streamed[:-1]] == ref[0].token_ids
        assert streamed[-1].token_ids == ref[0].token_ids
        streamed = list(client.stream(pages[1], "free_ocr", MAX_NEW, 0.0, NGRAM))  # reflowed
        assert [t for t in streamed[:-1]] == ref[1].token_ids and streamed[-1].text == ref[1].text
    finally:
        triton.unload(names)


def test_bad_request_gets_its_own_error(triton, tiny_snapshot, reference):
    folder, _ = tiny_snapshot
    pages, ref = reference
    names = write_repository(triton.model_repo, str(folder), 0, decoder="dec_bad")
    triton.load(names)
    try:
        client = TritonDecoder(triton.grpc_url, triton_model="dec_bad", triton_retries=0)
        with pytest.raises(PermanentError, match="bad VisionTokens blob|bad request"):
            client.decode([b"not vision tokens"], "free_ocr", 4)
        foreign = VisionTokens.from_bytes(pages[0])
        foreign.weights_id = "0123456789abcdef01234567"
        with pytest.raises(PermanentError, match="VisionTokens from encoder 0123456789abcdef01234567"):
            client.decode([foreign.to_bytes()], "free_ocr", 4)
        _same(client.decode(pages[:2], "free_ocr", MAX_NEW, 0.0, NGRAM), ref[:2])  # the model serves on
    finally:
        triton.unload(names)


def test_shard_reload_mid_stream_loses_no_page(triton, tiny_snapshot, reference, tmp_path):
    """Rebalance (plan from observed load, reload shards with the union, switch, shrink) while
    batches of pages decode continuously: every page of every batch equals the in-process output."""
    folder, _ = tiny_snapshot
    pages, ref = reference
    store = FilePlacementStore(tmp_path / "placement")
    import json

    cfg = json.loads((folder / "config.json").read_text())
    n_experts = cfg["language_config"]["n_routed_experts"]
    moe_layers = list(range(1, cfg["language_config"]["num_hidden_layers"]))
    store.put(contiguous_placement(n_experts, moe_layers, 2))
    store.set_active(1)
    port = free_port()
    names = write_repository(
        triton.model_repo,
        str(folder),
        2,
        placement_store=str(store.folder),
        decoder="dec_rb",
        shard_prefix="shard_rb",
        decoder_params={"metrics_port": str(port), "max_batch": "3"},
    )
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    triton.load(names[1:] + names[:1])
    client = TritonDecoder(triton.grpc_url, triton_model="dec_rb")
    batches, errors = [], []
    rebalanced = threading.Event()

    def decode_loop():
        try:
            # keep pages flowing until one full batch ran entirely after the rebalance
            while True:
                after = rebalanced.is_set()
                batches.append((after, client.decode(pages, "free_ocr", MAX_NEW, 0.0, NGRAM)))
                if after:
                    return
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=decode_loop)
    try:
        worker.start()
        deadline = time.monotonic() + 120
        counts = {}
        while not any(sum(c) for c in counts.values()):
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.1)
            counts = controller.observed_counts(metrics_url, n_experts)
        in_flight_at_start = len(batches)
        rep = controller.rebalance(triton.client, store, names[1:], counts, metrics_url=metrics_url)
        rebalanced.set()
        worker.join(300)
        assert not worker.is_alive() and not errors, errors
        assert rep.new.version == 2 and rep.after <= rep.before
        assert store.active_version() == 2
        assert parse_gauge(controller.scrape(metrics_url), PLACEMENT_VERSION) == 2
        for name in names[1:]:
            params = triton.client.get_model_config(name, as_json=True)["config"]["parameters"]
            assert params["placement_versions"]["string_value"] == "2"
        # pages were decoding while the shards were reloaded, and none was lost or changed
        assert len(batches) > in_flight_at_start + 1
        for _, out in batches:
            _same(out, ref)
    finally:
        rebalanced.set()
        worker.join(300)
        triton.unload(names)


def _bf16_to_numpy(t: torch.Tensor):
    import ml_dtypes

    return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)


def _numpy_to_torch(a) -> torch.Tensor:
    import numpy as np

    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(a.copy())


def _call_shard(triton, name: str, layer: int, rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    import numpy as np
    import tritonclient.grpc as grpcclient

    wire = {torch.float32: "FP32", torch.bfloat16: "BF16"}[rows.dtype]
    data = _bf16_to_numpy(rows) if rows.dtype == torch.bfloat16 else rows.numpy()
    inputs = []
    for tname, arr, dt in (
        ("LAYER", np.array([layer], dtype=np.int32), "INT32"),
        ("HIDDEN", data, wire),
        ("EXPERT_IDS", ids.to(torch.int32).numpy(), "INT32"),
    ):
        t = grpcclient.InferInput(tname, list(arr.shape), dt)
        t.set_data_from_numpy(arr)
        inputs.append(t)
    return _numpy_to_torch(triton.client.infer(name, inputs).as_numpy("EXPERT_OUT"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_dlpack_rows_round_trip_bit_exactly(triton, tiny_snapshot, reference, dtype):
    """Shard rows cross the python backend over DLPack (no numpy on the model side): a shard's
    output equals the same computation in this process bit for bit, in fp32 and in bf16; and the
    decoder fed by bf16 shards over BLS gives, page by page, the tokens of the in-process engine."""
    from ocrstream.model.tokenizer import resolve_prompt
    from ocrstream.serving.checkpoint import load_decoder_core
    from ocrstream.serving.engine import Engine, GenRequest, ModuleExperts
    from ocrstream.serving.expert_shard import ExpertShard

    folder, _ = tiny_snapshot
    pages, _ = reference
    tag = str(dtype).removeprefix("torch.")
    names = write_repository(
        triton.model_repo, str(folder), 2, decoder=f"dec_dl_{tag}", shard_prefix=f"shard_dl_{tag}", dtype=tag
    )
    triton.load(names[1:] + names[:1])
    try:
        ocr = OcrModel.load(folder)
        d = ocr.config.decoder
        p = contiguous_placement(d.n_routed_experts, list(range(1, d.num_hidden_layers)), 2)
        gen = torch.Generator().manual_seed(fresh_seed())
        bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
        for s in (0, 1):
            local = ExpertShard.from_checkpoint(str(folder), s, [p], dtype)
            for layer in (1, d.num_hidden_layers - 1):
                held = p.experts_on(s, layer)
                n = int(torch.randint(1, 40, (1,), generator=gen))
                rows = torch.randn(n, d.hidden_size, generator=gen).to(dtype)
                ids = torch.tensor(held)[torch.randint(0, len(held), (n,), generator=gen)]
                got = _call_shard(triton, names[1 + s], layer, rows, ids)
                assert got.dtype == dtype
                assert torch.equal(got.view(bits), local.compute(layer, rows, ids).view(bits))
        if dtype != torch.bfloat16:
            return  # fp32 decoding over shards: test_sharded_greedy_output_equals_inprocess
        client = TritonDecoder(triton.grpc_url, triton_model=names[0])
        core = load_decoder_core(folder, dtype, with_experts=True)
        stop = frozenset(
            {
                d.eos_token_id,
                *([ocr.tokenizer.ids["eos"]] if ocr.tokenizer.ids.get("eos") is not None else []),
            }
        )
        for blob in (pages[0], pages[2], pages[3]):
            (got,) = client.decode([blob], "free_ocr", MAX_NEW, 0.0, NGRAM)  # alone in the server's batch
            vt = VisionTokens.from_bytes(blob)
            ids = ocr.tokenizer.build_input_ids(resolve_prompt("free_ocr"), [vt.n_placeholders])
            results = {}
            engine = Engine(core, ModuleExperts(core), max_batch=1)
            engine.submit(
                GenRequest(
                    "x",
                    ids,
                    vt.embeds.to(dtype),
                    MAX_NEW,
                    stop,
                    ngram=NGRAM,
                    ngram_whitelist=tuple(ocr.config.ngram_whitelist),
                    on_done=lambda r, res, out=results: out.update(x=res),
                )
            )
            engine.run_until_idle()
            assert got.token_ids == results["x"].token_ids
    finally:
        triton.unload(names)
