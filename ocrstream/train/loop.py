"""Training loop for the embedded model: resumable, seeded, curriculum, health metrics.

Run state lives in ``~/.cache/ocrstream/train/<run>/``: ``ckpt.pt`` (model, reading query,
optimiser, step, curriculum, RNG states, CPU seconds), ``metrics.jsonl`` (one line per log step)
and ``best.pt`` (the weights with the lowest validation loss so far). Starting a run whose
directory holds a checkpoint resumes it.

Health metric: the teacher-forced cross-entropy gap between the real image and a blank page (and
another page's image) on a fixed validation batch. A gap near 0 means the decoder ignores the image.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ocrstream.data.corpus import corpus_fingerprint, load_corpus
from ocrstream.data.fonts import train_fonts
from ocrstream.data.render import LEVELS, PageGenerator
from ocrstream.model.deepseek_ocr import DeepseekOCRForCausalLM
from ocrstream.train.batches import at_view, corrupt, make_batch
from ocrstream.train.objective import Trainee, compute_loss, image_gap
from ocrstream.train.recipe import TILE, model_config, n_placeholders
from ocrstream.train.tokenizer import SPECIAL_TOKENS, load_tokenizer, special_ids

log = logging.getLogger(__name__)


def default_run_dir(run: str) -> Path:
    return Path(os.environ.get("OCRSTREAM_TRAIN_DIR", Path.home() / ".cache" / "ocrstream" / "train")) / run


@dataclass
class TrainConfig:
    run: str = "embedded"
    tokenizer: str = "ocrstream/assets/model/tokenizer.json"
    seed: int = 1234
    batch: int = 16
    steps: int = 1_000_000  # upper bound; runs are usually stopped by max_minutes
    max_minutes: float = 0.0  # 0 = no wall-clock limit
    lr: float = 1e-3  # stable with the glyph loss (3e-4 was needed without it: 1e-3 collapsed)
    warmup: int = 50
    decoder_lr_mult_start: float = 0.3  # decoder learns slower at first so vision can catch up
    decoder_lr_ramp: int = 1500
    weight_decay: float = 0.05
    clip: float = 1.0
    read_weight: float = 1.0
    var_weight: float = 5.0
    var_floor: float = 0.3
    cell_weight: float = 1.0
    glyph_weight: float = 1.0  # patch-level glyph classes on the SAM neck (training-only head)
    anneal_steps: int = 0  # > 0: cosine LR decay to anneal_floor over this many steps from here
    anneal_floor: float = 0.05
    guide_weight: float = 0.5  # one head per upper decoder layer told which vision token to read
    corrupt_rate: float = 0.15
    unlock_acc: float = 0.55  # reading-head token accuracy at the top level that unlocks the next
    unlock_steps: int = 600  # ... or this many steps at the top level, whichever comes first
    start_level: int = 0
    max_level: int = 3
    eval_every: int = 50
    save_every: int = 50
    threads: int = 2
    val_pages: int = 16
    size: int = TILE
    levels_prob_top: float = 0.5  # share of batches drawn at the newest unlocked level
    # Smaller ladder modes (the page stretched to fewer px, fewer vision tokens): without them the
    # model reads only its training size and auto mode has no cheaper mode to choose.
    view_sizes: tuple[int, ...] = ()
    view_prob: float = 0.0  # share of eligible batches read at one of view_sizes
    view_max_level: int = 2  # denser pages at those sizes are past what the tokens can carry


@dataclass
class RunState:
    step: int = 0
    pages: int = 0
    top_level: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    best_val: float = float("inf")
    acc_ema: dict = field(default_factory=dict)  # level -> reading accuracy EMA
    level_since: int = 0  # step at which the current top level was unlocked
    warm_from: int = 0  # step the LR warm-up (re)started: a fresh optimiser warms up again
    anneal_from: int = -1  # step the LR decay started (-1: constant LR)
    anneal_steps: int = 0  # its length: a resumed run keeps its schedule


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_trainee(tok) -> Trainee:
    sp = special_ids(tok)
    cfg = model_config(tok.get_vocab_size(), sp)
    return Trainee(DeepseekOCRForCausalLM(cfg))


def make_optimizer(tr: Trainee, tc: TrainConfig) -> torch.optim.Optimizer:
    dec, vis, nodecay = [], [], []
    for name, p in tr.named_parameters():
        if p.dim() < 2 or "norm" in name or "pos" in name or "embedding" in name:
            nodecay.append(p)
        elif name.startswith(("model.model.layers", "model.model.embed_tokens", "model.lm_head")):
            dec.append(p)
        else:
            vis.append(p)
    return torch.optim.AdamW(
        [
            {"params": vis, "name": "vision", "weight_decay": tc.weight_decay},
            {"params": dec, "name": "decoder", "weight_decay": tc.weight_decay},
            {"params": nodecay, "name": "nodecay", "weight_decay": 0.0},
        ],
        lr=tc.lr,
        betas=(0.9, 0.95),
    )


def lr_for(
    group: str, step: int, tc: TrainConfig, warm_from: int = 0, anneal_from: int = -1, anneal_steps: int = 0
) -> float:
    warm = min(1.0, (step - warm_from + 1) / tc.warmup)
    lr = tc.lr * warm
    if anneal_from >= 0 and anneal_steps > 0:
        # the constant-LR phase plateaus; a final decay settles the weights into the basin
        t = min(1.0, (step - anneal_from) / anneal_steps)
        lr *= tc.anneal_floor + (1 - tc.anneal_floor) * 0.5 * (1 + math.cos(math.pi * t))
    if group == "decoder":
        ramp = min(1.0, step / max(1, tc.decoder_lr_ramp))
        lr *= tc.decoder_lr_mult_start + (1 - tc.decoder_lr_mult_start) * ramp
    return lr


def level_weights(top: int, tc: TrainConfig) -> list[float]:
    lv = list(range(tc.start_level, top + 1))
    if len(lv) == 1:
        return [1.0 if i == top else 0.0 for i in LEVELS]
    rest = (1 - tc.levels_prob_top) / (len(lv) - 1)
    return [tc.levels_prob_top if i == top else (rest if i in lv else 0.0) for i in LEVELS]


def _raise_interrupt(signum, frame) -> None:  # noqa: ANN001
    raise KeyboardInterrupt(f"signal {signum}")


class Trainer:
    def __init__(self, tc: TrainConfig, run_dir: Path | None = None) -> None:
        self.tc = tc
        self.dir = run_dir or default_run_dir(tc.run)
        self.dir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(tc.threads)
        torch.manual_seed(tc.seed)
        self.tok = load_tokenizer(tc.tokenizer)
        self.special = special_ids(self.tok)
        self.n_img = n_placeholders(tc.size)
        corpus = load_corpus()
        fonts = train_fonts()
        self.gen = PageGenerator(corpus["train"], fonts, tc.size, split="train", seed=tc.seed)
        self.val_gen = PageGenerator(corpus["val"], fonts, tc.size, split="val", seed=tc.seed)
        self.tr = build_trainee(self.tok)
        self.opt = make_optimizer(self.tr, tc)
        self.state = RunState(top_level=tc.start_level)
        self.rng = random.Random(tc.seed)
        self.corpus_id = corpus_fingerprint()
        self._resume()
        val_pages = {lvl: [self.val_gen.page(i, lvl) for i in range(tc.val_pages)] for lvl in LEVELS}
        self.val_batches = {
            lvl: make_batch(p, self.tok, self.n_img, self.special) for lvl, p in val_pages.items()
        }
        # level 1 (a few lines of large type) at each smaller view: what auto mode would pick
        self.val_view_batches = {
            side: make_batch(
                [at_view(p, side) for p in val_pages[1]], self.tok, n_placeholders(side), self.special
            )
            for side in tc.view_sizes
        }

    # ---- checkpoints -------------------------------------------------------------------------
    def _resume(self) -> None:
        ck = self.dir / "ckpt.pt"
        if not ck.exists():
            return
        data = torch.load(ck, map_location="cpu", weights_only=False)
        # a recipe change may add training-only heads: they start fresh, and so does the optimiser
        missing, unexpected = self.tr.load_state_dict(data["trainee"], strict=False)
        if unexpected or any(k.startswith("model.") for k in missing):
            raise RuntimeError(f"checkpoint {ck} does not fit: missing {missing}, unexpected {unexpected}")
        self.state = RunState(**data["state"])
        if missing:
            # Adam's first steps with empty moments are full-LR sized for every weight: warm up again
            log.warning("new training heads %s start from scratch, with a fresh optimiser", missing)
            self.state.warm_from = self.state.step
        else:
            self.opt.load_state_dict(data["opt"])
        self.rng.setstate(data["rng"])
        torch.set_rng_state(data["torch_rng"])
        log.info(
            "resumed %s at step %d (%d pages, %.2f CPU h)",
            ck,
            self.state.step,
            self.state.pages,
            self.state.cpu_seconds / 3600,
        )

    def save(self, name: str = "ckpt.pt") -> Path:
        path = self.dir / name
        tmp = path.with_suffix(".tmp")
        torch.save(
            {
                "trainee": self.tr.state_dict(),
                "opt": self.opt.state_dict() if name == "ckpt.pt" else None,
                "state": asdict(self.state),
                "rng": self.rng.getstate(),
                "torch_rng": torch.get_rng_state(),
                "train_config": asdict(self.tc),
                "model_config": self.tr.model.config.to_hf_dict(),
                "corpus": self.corpus_id,
            },
            tmp,
        )
        tmp.replace(path)
        return path

    # ---- one step ----------------------------------------------------------------------------
    def step(self) -> dict:
        tc, st = self.tc, self.state
        w = level_weights(st.top_level, tc)
        level = self.rng.choices(LEVELS, w)[0]
        pages = [self.gen.sample(self.rng, level) for _ in range(tc.batch)]
        side = tc.size
        if tc.view_sizes and level <= tc.view_max_level and self.rng.random() < tc.view_prob:
            side = self.rng.choice(tc.view_sizes)
            pages = [at_view(p, side) for p in pages]
        batch = make_batch(pages, self.tok, n_placeholders(side), self.special)
        ar_in = corrupt(
            batch.targets[:, :-1].clamp_min(0),
            tc.corrupt_rate,
            self.tok.get_vocab_size(),
            len(SPECIAL_TOKENS),
            self.rng,
        )
        for g in self.opt.param_groups:
            g["lr"] = lr_for(g["name"], st.step, tc, st.warm_from, st.anneal_from, st.anneal_steps)
        self.tr.train()
        out = compute_loss(
            self.tr,
            batch,
            ar_inputs=ar_in,
            read_weight=tc.read_weight,
            var_weight=tc.var_weight,
            var_floor=tc.var_floor,
            cell_weight=tc.cell_weight,
            glyph_weight=tc.glyph_weight,
            guide_weight=tc.guide_weight,
        )
        self.opt.zero_grad(set_to_none=True)
        out.total.backward()
        gn = torch.nn.utils.clip_grad_norm_(self.tr.parameters(), tc.clip)
        self.opt.step()
        st.step += 1
        st.pages += batch.size
        ema = st.acc_ema.get(str(level), 0.0)
        st.acc_ema[str(level)] = 0.9 * ema + 0.1 * out.read_acc
        if st.top_level < tc.max_level and (
            (level == st.top_level and st.acc_ema[str(level)] > tc.unlock_acc)
            or st.step - st.level_since >= tc.unlock_steps
        ):
            st.top_level += 1
            st.level_since = st.step
            log.info("step %d: level %d unlocked (reading acc %s)", st.step, st.top_level, st.acc_ema)
        return {
            "level": level,
            "side": side,
            "loss": out.total.item(),
            "ar": out.ar.item(),
            "read": out.read.item(),
            "var_pen": out.var_pen.item(),
            "aux": out.aux.item(),
            "cell": out.cell.item(),
            "glyph": out.glyph.item(),
            "glyph_acc": out.glyph_acc,
            "cell_glyph": out.cell_glyph.item(),
            "cell_glyph_acc": out.cell_glyph_acc,
            "guide": out.guide.item(),
            "guide_acc": out.guide_acc,
            "image_frac": out.image_frac,
            "ar_acc": out.ar_acc,
            "read_acc": out.read_acc,
            "grad_norm": float(gn),
        }

    def evaluate(self) -> dict:
        res = {}
        for lvl in sorted({min(1, self.state.top_level), self.state.top_level}):
            g = image_gap(self.tr, self.val_batches[lvl])
            res.update({f"L{lvl}_{k}": v for k, v in g.items()})
        for side, batch in self.val_view_batches.items():
            g = image_gap(self.tr, batch)
            res.update({f"V{side}_L1_{k}": g[k] for k in ("ce_real", "gap_blank")})
        return res

    # ---- main loop ---------------------------------------------------------------------------
    def run(self, progress: bool = True) -> RunState:
        from tqdm import tqdm

        tc, st = self.tc, self.state
        # SIGTERM (e.g. `kill PID`) stops after saving, like Ctrl-C
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        if tc.anneal_steps > 0 and tc.anneal_steps != st.anneal_steps:
            # a new length starts a new decay here; without --anneal-steps the stored one goes on
            st.anneal_from, st.anneal_steps = st.step, tc.anneal_steps
            log.info("LR decay over %d steps from step %d", tc.anneal_steps, st.step)
        t_start = time.time()
        cpu_start = cpu_seconds()
        cpu_base, wall_base = st.cpu_seconds, st.wall_seconds
        bar = tqdm(
            total=tc.steps if tc.steps < 1_000_000 else None,
            initial=st.step,
            disable=not progress,
            dynamic_ncols=True,
            mininterval=5,
        )
        metrics_f = (self.dir / "metrics.jsonl").open("a")
        last_gap = float("nan")
        win_pages, win_t = 0, time.time()
        try:
            while st.step < tc.steps:
                if tc.max_minutes and (time.time() - t_start) > tc.max_minutes * 60:
                    break
                m = self.step()
                win_pages += tc.batch
                st.cpu_seconds = cpu_base + cpu_seconds() - cpu_start
                st.wall_seconds = wall_base + time.time() - t_start
                rec = {"step": st.step, "pages": st.pages, "top_level": st.top_level, **m}
                if st.step % tc.eval_every == 0:
                    ev = self.evaluate()
                    rec.update(ev)
                    last_gap = ev.get(f"L{st.top_level}_gap_blank", float("nan"))
                    val = ev.get(f"L{st.top_level}_ce_real", float("inf")) + 10.0 * (
                        tc.max_level - st.top_level
                    )
                    if val < st.best_val:
                        st.best_val = val
                        self.save("best.pt")
                pps = win_pages / max(1e-6, time.time() - win_t)
                rec.update(
                    {"pages_per_s": pps, "cpu_h": st.cpu_seconds / 3600, "wall_h": st.wall_seconds / 3600}
                )
                metrics_f.write(json.dumps(rec) + "\n")
                metrics_f.flush()
                if st.step % tc.save_every == 0:
                    self.save()
                bar.set_postfix(
                    L=st.top_level,
                    loss=f"{m['loss']:.3f}",
                    read=f"{m['read_acc']:.2f}",
                    glyph=f"{m['glyph_acc']:.2f}/{m['cell_glyph_acc']:.2f}",
                    guide=f"{m['guide_acc']:.2f}",
                    gap=f"{last_gap:.2f}",
                    pps=f"{pps:.1f}",
                    refresh=False,
                )
                bar.update(1)
                if time.time() - win_t > 60:
                    win_pages, win_t = 0, time.time()
                if not math.isfinite(m["loss"]):
                    raise FloatingPointError(f"non-finite loss at step {st.step}: {m}")
        except KeyboardInterrupt:
            log.info("interrupted at step %d; checkpoint saved", st.step)
        finally:
            self.save()
            metrics_f.close()
            bar.close()
        return st
