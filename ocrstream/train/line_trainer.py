"""Training loop for the embedded line reader: resumable, seeded, CPU hours recorded.

Run state lives in ``~/.cache/ocrstream/train/<run>/``: ``ckpt.pt`` (model, optimiser, step, RNG
states, CPU seconds), ``metrics.jsonl`` (one line per step, CER every ``eval_every`` steps),
``tokenizer.json`` and ``best.pt`` (the weights with the lowest validation CER so far). Starting a
run whose directory holds a checkpoint resumes it; SIGTERM or Ctrl-C saves and stops.

Batches are drawn ``pool`` at a time, sorted by strip width and cut into batches, so a batch is
padded to a width close to its own lines' (padding is most of the cost of mixed-width batches).
The LR warms up, then follows one cosine to ``lr_floor`` over ``steps``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ocrstream.data.code import load_code_lines
from ocrstream.data.corpus import corpus_fingerprint, load_corpus
from ocrstream.data.fonts import heldout_fonts, train_fonts
from ocrstream.data.lines import LineGenerator
from ocrstream.data.render import seed_for
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.train.line_batches import LineBatch, compute_loss, make_batch
from ocrstream.train.line_eval import evaluate_batches
from ocrstream.train.line_recipe import MAX_WIDTH, SQUEEZES, model_config
from ocrstream.train.tokenizer import build_char_tokenizer, load_tokenizer, special_ids

log = logging.getLogger(__name__)


def default_run_dir(run: str) -> Path:
    return Path(os.environ.get("OCRSTREAM_TRAIN_DIR", Path.home() / ".cache" / "ocrstream" / "train")) / run


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class LineTrainConfig:
    run: str = "lines"
    seed: int = 1234
    batch: int = 32
    pool: int = 8  # batches drawn together and sorted by width
    steps: int = 6_500  # the LR schedule's length; the run stops there (or at max_minutes)
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    lr: float = 1.5e-3
    lr_floor: float = 0.03  # final LR as a share of lr
    warmup: int = 300
    weight_decay: float = 0.05
    clip: float = 1.0
    ctc_weight: float = 1.0
    ar_share: float = 0.5  # rows of each batch that also train the decoder (CTC trains on all)
    corrupt_rate: float = 0.1
    random_share: float = 0.5  # random-character lines
    code_share: float = 0.0  # code lines (stdlib source, command lines, paths) in monospace faces
    smart_quotes: float = 0.0  # prose lines with typographic quotes
    inline_code: float = 0.0  # prose lines with a word or two of code in a monospace face
    init: str = ""  # start from these weights (a snapshot folder or a run's .pt), not from random
    eval_every: int = 250  # greedy-CTC CER on the held-out lines
    ar_eval_every: int = 1000  # also autoregressive decoding (slower: one decoder pass per character)
    eval_lines: int = 96
    save_every: int = 50
    threads: int = 2

    @property
    def docs_mix(self) -> bool:
        """The lines mix in what technical documents print: code lines, typographic quotes, code
        words inline (these need the code lines)."""
        return bool(self.code_share or self.smart_quotes or self.inline_code)


@dataclass
class RunState:
    step: int = 0
    lines: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    best_cer: float = float("inf")
    history: list = field(default_factory=list)  # evaluation records


def _raise_interrupt(signum, frame) -> None:  # noqa: ANN001
    raise KeyboardInterrupt(f"signal {signum}")


def lr_at(step: int, tc: LineTrainConfig) -> float:
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    t = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    return tc.lr * (tc.lr_floor + (1 - tc.lr_floor) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model: torch.nn.Module, tc: LineTrainConfig) -> torch.optim.Optimizer:
    decay, nodecay = [], []
    for name, p in model.named_parameters():
        (nodecay if p.dim() < 2 or "norm" in name or "pos" in name or "embedding" in name else decay).append(
            p
        )
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": tc.weight_decay}, {"params": nodecay, "weight_decay": 0.0}],
        lr=tc.lr,
        betas=(0.9, 0.98),
    )


def eval_sets(
    tok,
    seed: int,
    n: int,
    width_multiple: int,
    max_width: int = MAX_WIDTH,
    tc: LineTrainConfig | None = None,
    code_lines: dict[str, list] | None = None,
) -> dict[str, list[LineBatch]]:  # noqa: ANN001
    """Fixed held-out lines: val-split text in the training faces, test-split text in the held-out
    face; base rung (and the squeezed rungs for the curve); degraded like training lines. A stage
    with code lines or typographic quotes has them in its val lines too (val-split code files),
    so the best checkpoint is chosen on the text the stage trains on. ``code_lines``: the caller's
    ``load_code_lines()`` (read here when not given)."""
    corpus = load_corpus()
    mix = {}
    if tc is not None and tc.docs_mix:
        mix = {
            "code_lines": (code_lines if code_lines is not None else load_code_lines()).get("val", []),
            "code_share": tc.code_share,
            "smart_quotes": tc.smart_quotes,
            "inline_code": tc.inline_code,
        }
    sets = {
        "val": LineGenerator(corpus["val"], train_fonts(), "val", seed, max_width=max_width, **mix),
        "font": LineGenerator(corpus["test"], heldout_fonts(), "font", seed, max_width=max_width),
    }
    out = {}
    for name, gen in sets.items():
        lines = sorted((gen.line(i) for i in range(n)), key=lambda s: s.strip.width)
        out[name] = [make_batch(lines[i : i + 32], tok, width_multiple, max_width) for i in range(0, n, 32)]
    return out


class LineTrainer:
    """``make_config(vocab_size, special_ids)`` builds the model config (default: the recipe's)."""

    def __init__(self, tc: LineTrainConfig, run_dir: Path | None = None, make_config=model_config) -> None:  # noqa: ANN001
        self.tc = tc
        self.dir = run_dir or default_run_dir(tc.run)
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(tc.threads)
        torch.manual_seed(tc.seed)
        tok_path = self.dir / "tokenizer.json"
        if not tok_path.exists() and tc.init and (Path(tc.init) / "tokenizer.json").exists():
            shutil.copyfile(Path(tc.init) / "tokenizer.json", tok_path)  # the ids the weights were trained on
        if not tok_path.exists():
            build_char_tokenizer().save(str(tok_path))
        self.tok = load_tokenizer(tok_path)
        self.special = special_ids(self.tok)
        self.model = DeepseekOCRForCausalLM(make_config(self.tok.get_vocab_size(), self.special))
        self.opt = make_optimizer(self.model, tc)
        self.state = RunState()
        self.rng = random.Random(tc.seed)
        corpus = load_corpus()
        # read once: the training lines' code and the val lines' (eval_sets)
        code = load_code_lines() if tc.docs_mix else {}
        self.max_width = self.model.config.sam.max_width
        self.gen = LineGenerator(
            corpus["train"],
            train_fonts(),
            "train",
            tc.seed,
            tc.random_share,
            SQUEEZES,
            max_width=self.max_width,
            code_lines=code.get("train", []),
            code_share=tc.code_share,
            smart_quotes=tc.smart_quotes,
            inline_code=tc.inline_code,
        )
        self.corpus_id = corpus_fingerprint()
        self.pool: tuple[int, list[LineBatch]] = (-1, [])
        if tc.init and not (self.dir / "ckpt.pt").exists():
            self._init_from(Path(tc.init))
        self._resume()
        self.val = eval_sets(
            self.tok, tc.seed, tc.eval_lines, self.model.config.sam.width_multiple, self.max_width, tc, code
        )

    # ---- checkpoints -------------------------------------------------------------------------
    def _resume(self) -> None:
        ck = self.dir / "ckpt.pt"
        if not ck.exists():
            return
        data = torch.load(ck, map_location="cpu", weights_only=False)
        self.model.load_state_dict(data["model"])
        self.opt.load_state_dict(data["opt"])
        self.state = RunState(**data["state"])
        self.rng.setstate(data["rng"])
        torch.set_rng_state(data["torch_rng"])
        log.info("resumed %s at step %d (%.2f CPU h)", ck, self.state.step, self.state.cpu_seconds / 3600)

    def _init_from(self, src: Path) -> None:
        """A second stage starts from an earlier stage's weights: a snapshot folder (what export
        writes) or a run's checkpoint. Same architecture and vocabulary, or it fails loudly."""
        if src.is_dir():
            from ocrstream.model.weights import load_snapshot

            state = load_snapshot(src, dtype=torch.float32).state_dict()
        else:
            state = torch.load(src, map_location="cpu", weights_only=False)["model"]
        self.model.load_state_dict(state, strict=True)
        log.info("initialised from %s", src)

    def save(self, name: str = "ckpt.pt") -> Path:
        path = self.dir / name
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict() if name == "ckpt.pt" else None,
                "state": asdict(self.state),
                "rng": self.rng.getstate(),
                "torch_rng": torch.get_rng_state(),
                "train_config": asdict(self.tc),
                "model_config": self.model.config.to_hf_dict(),
                "corpus": self.corpus_id,
            },
            tmp,
        )
        tmp.replace(path)
        return path

    # ---- steps -------------------------------------------------------------------------------
    def next_batch(self) -> LineBatch:
        """Batch ``step`` of the run: pools are drawn from their own seeds, so a resumed run sees
        exactly the batches an uninterrupted one would."""
        tc = self.tc
        k, within = divmod(self.state.step, tc.pool)
        if self.pool[0] != k:
            rng = random.Random(seed_for(tc.seed, "line-pool", k))
            lines = sorted(
                (self.gen.sample(rng) for _ in range(tc.batch * tc.pool)), key=lambda s: s.strip.width
            )
            batches = [lines[i : i + tc.batch] for i in range(0, len(lines), tc.batch)]
            for b in batches:  # rows in random order: the decoder trains on the first ar_share of them
                rng.shuffle(b)
            rng.shuffle(batches)
            wm = self.model.config.sam.width_multiple
            self.pool = (k, [make_batch(b, self.tok, wm, self.max_width) for b in batches])
        return self.pool[1][within]

    def step(self) -> dict:
        tc, st = self.tc, self.state
        batch = self.next_batch()
        lr = lr_at(st.step, tc)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.model.train()
        out = compute_loss(
            self.model,
            batch,
            self.tok,
            self.special,
            tc.ctc_weight,
            tc.corrupt_rate,
            self.rng,
            ar_rows=max(1, round(tc.ar_share * batch.size)),
        )
        self.opt.zero_grad(set_to_none=True)
        out.total.backward()
        gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip)
        self.opt.step()
        st.step += 1
        st.lines += batch.size
        return {
            "loss": out.total.item(),
            "ctc": out.ctc.item(),
            "ar": out.ar.item(),
            "aux": out.aux.item(),
            "ar_acc": out.ar_acc,
            "lr": lr,
            "width": batch.pixels.shape[-1],
            "grad_norm": float(gn),
        }

    def evaluate(self, ar: bool = True) -> dict:
        res = {}
        for name, batches in self.val.items():
            for k, v in evaluate_batches(self.model, batches, self.tok, self.special, ar).items():
                res[f"{name}_{k}"] = v
        return res

    def _threads_knob(self) -> None:
        """``<run dir>/threads`` (a number), when present, sets the torch thread count of a
        running job: on a shared machine one thread can outrun two that keep being preempted."""
        path = self.dir / "threads"
        try:
            n = int(path.read_text().strip())
        except (OSError, ValueError):
            return
        if n >= 1 and n != torch.get_num_threads():
            log.info("threads %d -> %d (%s)", torch.get_num_threads(), n, path)
            torch.set_num_threads(n)

    # ---- main loop ---------------------------------------------------------------------------
    def run(self, progress: bool = True) -> RunState:
        from tqdm import tqdm

        tc, st = self.tc, self.state
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        t_start, cpu_start = time.time(), cpu_seconds()
        cpu_base, wall_base = st.cpu_seconds, st.wall_seconds
        bar = tqdm(total=tc.steps, initial=st.step, disable=not progress, dynamic_ncols=True, mininterval=10)
        metrics = (self.dir / "metrics.jsonl").open("a")
        last = {}
        win_lines, win_t = 0, time.time()
        try:
            while st.step < tc.steps:
                if tc.max_minutes and time.time() - t_start > tc.max_minutes * 60:
                    break
                if st.step % 25 == 0:
                    self._threads_knob()
                m = self.step()
                win_lines += tc.batch
                st.cpu_seconds = cpu_base + cpu_seconds() - cpu_start
                st.wall_seconds = wall_base + time.time() - t_start
                rec = {"step": st.step, "lines": st.lines, **m}
                if st.step % tc.eval_every == 0 or st.step == tc.steps:
                    ev = self.evaluate(ar=st.step % tc.ar_eval_every == 0 or st.step == tc.steps)
                    last = ev
                    rec.update(ev)
                    st.history.append({"step": st.step, "cpu_h": st.cpu_seconds / 3600, **ev})
                    score = ev["val_cer_ctc"]
                    if score < st.best_cer:
                        st.best_cer = score
                        self.save("best.pt")
                lps = win_lines / max(1e-6, time.time() - win_t)
                rec.update(
                    {"lines_per_s": lps, "cpu_h": st.cpu_seconds / 3600, "wall_h": st.wall_seconds / 3600}
                )
                metrics.write(json.dumps(rec) + "\n")
                metrics.flush()
                if st.step % tc.save_every == 0:
                    self.save()
                bar.set_postfix(
                    ctc=f"{m['ctc']:.3f}",
                    ar=f"{m['ar']:.3f}",
                    cer=f"{last.get('val_cer_ctc', float('nan')):.3f}/{last.get('val_cer_ar', float('nan')):.3f}",
                    lps=f"{lps:.1f}",
                    refresh=False,
                )
                bar.update(1)
                if time.time() - win_t > 60:
                    win_lines, win_t = 0, time.time()
                if not math.isfinite(m["loss"]):
                    raise FloatingPointError(f"non-finite loss at step {st.step}: {m}")
        except KeyboardInterrupt:
            log.info("interrupted at step %d; checkpoint saved", st.step)
        finally:
            self.save()
            metrics.close()
            bar.close()
        return st
