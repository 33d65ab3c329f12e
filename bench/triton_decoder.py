"""Decoder throughput: sharded Triton vs monolithic Triton vs in-process, printed side by side.

One random-weight model (tiny test config, or the embedded preset's sizes with --preset embedded)
is saved as a snapshot; the same pages (random vision tokens) are decoded greedily by:
  in-process   OcrModel.decode, one left-padded batch (ocrstream.model.generation)
  triton K=0   the decoder model holding its experts (continuous batching, no BLS)
  triton K=k   the decoder + k expert-shard models (one BLS call per shard per MoE layer per step)
Reported: pages/s (pages / wall time of the call), ms per decode step (wall / batched forward passes,
the decoder's ocrstream_decoder_steps counter), both as ratios to in-process, and whether the
tokens equal in-process. Per-step overhead = ms/step(mode) - ms/step(in-process).

    python bench/triton_decoder.py                         # 16 pages x 32 tokens, K = 2
    python bench/triton_decoder.py --shards 1,2,4 --pages 32 --tokens 48 --preset embedded
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from ocrstream.backends.triton import TritonDecoder
from ocrstream.model.config import embedded_config, tiny_test_config
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.model.runtime import OcrModel, VisionTokens
from ocrstream.model.weights import save_snapshot
from ocrstream.serving.controller import scrape
from ocrstream.serving.launcher import TritonServer, free_port
from ocrstream.serving.repo import write_repository

log = logging.getLogger("bench.triton_decoder")


def make_snapshot(folder: Path, preset: str, seed: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(seed)
    cfg = tiny_test_config() if preset == "tiny" else embedded_config(vocab_size=512)
    model = DeepseekOCRForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(std=0.5)
        model.model.embed_tokens.weight.normal_(std=1.0)
        model.lm_head.weight[cfg.decoder.eos_token_id] = (
            0.0  # EOS never wins: every page runs its full budget
        )
    save_snapshot(model, folder)
    d = cfg.decoder
    roles = {
        "<bos>": d.bos_token_id,
        "<eos>": d.eos_token_id,
        "<pad>": d.pad_token_id,
        "<image>": cfg.image_token_id,
    }
    vocab = {f"t{i}": i for i in range(d.vocab_size) if i not in roles.values()}
    vocab.update(roles)
    unk = next(iter(k for k in vocab if k.startswith("t")))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(list(roles))
    tok.save(str(folder / "tokenizer.json"))


def steps_of(metrics_url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for fam in text_string_to_metric_families(scrape(metrics_url)):
        if fam.name == "ocrstream_decoder_steps":
            total += sum(s.value for s in fam.samples if s.name.endswith("_total"))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32, help="max new tokens per page")
    ap.add_argument("--shards", default="2", help="comma list of shard counts K >= 1")
    ap.add_argument("--preset", choices=("tiny", "embedded"), default="tiny")
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions per mode (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    shard_counts = [int(k) for k in a.shards.split(",") if k.strip()]

    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        root = Path(tmp)
        make_snapshot(root / "ckpt", a.preset, a.seed)
        model = OcrModel.load(root / "ckpt")
        hidden = model.config.decoder.hidden_size
        gen = torch.Generator().manual_seed(a.seed)
        pages = [
            VisionTokens(torch.randn(64, hidden, generator=gen), "tiny", (1, 1), (64, 64))
            for _ in range(a.pages)
        ]
        blobs = [p.to_bytes() for p in pages]

        rows = []
        best = float("inf")
        for _ in range(a.reps):
            t0 = time.perf_counter()
            ref = model.decode(pages, prompt="free_ocr", max_new_tokens=a.tokens, ngram=None)
            best = min(best, time.perf_counter() - t0)
        ref_steps = max(r.n_tokens + int(r.stopped) for r in ref)  # one prefill + (choices - 1) steps
        rows.append(("in-process", a.pages / best, 1000 * best / ref_steps, True))

        (root / "repo").mkdir()
        server = TritonServer(root / "repo", root / "work").start()
        try:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(server.grpc_url)
            for k in [0, *shard_counts]:
                port = free_port()
                names = write_repository(
                    root / "repo",
                    str(root / "ckpt"),
                    k,
                    decoder=f"dec_k{k}",
                    shard_prefix=f"shard_k{k}",
                    decoder_params={"metrics_port": str(port), "max_batch": str(a.pages)},
                )
                for n in names[1:] + names[:1]:
                    client.load_model(n)
                dec = TritonDecoder(server.grpc_url, triton_model=f"dec_k{k}")
                url = f"http://127.0.0.1:{port}/metrics"
                dec.decode(blobs[:2], "free_ocr", 4)  # warm-up
                best, best_steps, same = float("inf"), 1.0, True
                for _ in range(a.reps):
                    s0 = steps_of(url)
                    t0 = time.perf_counter()
                    out = dec.decode(blobs, "free_ocr", a.tokens, 0.0, None)
                    dt = time.perf_counter() - t0
                    if dt < best:
                        best, best_steps = dt, steps_of(url) - s0
                    same = same and [o.token_ids for o in out] == [r.token_ids for r in ref]
                label = "triton monolithic" if k == 0 else f"triton K={k} shards"
                rows.append((label, a.pages / best, 1000 * best / max(best_steps, 1.0), same))
                for n in names:
                    client.unload_model(n)
        finally:
            server.stop()

    base_pps, base_ms = rows[0][1], rows[0][2]
    print(f"\n{a.pages} pages x {a.tokens} new tokens, preset {a.preset}, torch threads 1")
    print(
        f"{'mode':<22}{'pages/s':>10}{'x in-proc':>11}{'ms/step':>10}{'x in-proc':>11}{'overhead ms':>13}  same tokens"
    )
    for label, pps, ms, same in rows:
        print(
            f"{label:<22}{pps:>10.2f}{pps / base_pps:>11.2f}{ms:>10.2f}{ms / base_ms:>11.2f}{ms - base_ms:>13.2f}  {same}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
