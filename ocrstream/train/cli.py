"""`ocrstream data ...`, `ocrstream tokenizer train`, `ocrstream train`, `ocrstream eval`, `ocrstream export`.

The embedded model's data, tokenizer, training and evaluation (docs/training.md).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="synthetic data: corpus, sample pages, sample PDFs")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    c = dsub.add_parser("corpus", help="(re)build the offline text corpus with its splits")
    c.add_argument("--out", type=Path, default=None)
    c.set_defaults(func=cmd_corpus)
    r = dsub.add_parser("render", help="render deterministic pages (PNG + .txt + .md) of a split")
    r.add_argument("--split", default="train", choices=["train", "val", "test", "font"])
    r.add_argument("--level", type=int, default=3)
    r.add_argument("-n", type=int, default=8)
    r.add_argument("--size", type=int, default=256)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", type=Path, required=True)
    r.set_defaults(func=cmd_render)
    s = dsub.add_parser("samples", help="regenerate the bundled sample PDFs and their source texts")
    s.add_argument("--out", type=Path, default=ASSETS / "samples")
    s.set_defaults(func=cmd_samples)
    data.set_defaults(func=lambda a: (data.print_help(), 2)[1])

    tok = subparsers.add_parser("tokenizer", help="project tokenizer")
    tsub = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    t = tsub.add_parser("train", help="train the BPE tokenizer on the train split")
    t.add_argument("--vocab", type=int, default=1024)
    t.add_argument("--out", type=Path, default=ASSETS / "model" / "tokenizer.json")
    t.set_defaults(func=cmd_tokenizer)
    tok.set_defaults(func=lambda a: (tok.print_help(), 2)[1])

    tr = subparsers.add_parser("train", help="train (or resume) the embedded line reader")
    tr.add_argument("--run", default="lines", help="run name: ~/.cache/ocrstream/train/<run>")
    tr.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget (0 = until --steps)")
    tr.add_argument("--steps", type=int, default=None, help="length of the LR schedule (default 6500)")
    tr.add_argument("--batch", type=int, default=None)
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--lr", type=float, default=None)
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--init", default=None, help="start from these weights (snapshot folder or .pt)")
    tr.add_argument(
        "--stage", default="base", choices=["base", "docs"], help="recipe stage (line_recipe.STAGES)"
    )
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=cmd_train)

    ev = subparsers.add_parser("eval", help="evaluate a model folder (default: the shipped model)")
    ev.add_argument("--model", type=Path, default=None, help="snapshot folder (default: shipped model)")
    ev.add_argument("--lines", type=int, default=256, help="held-out lines per line split")
    ev.add_argument("--pages", type=int, default=12, help="synthetic held-out pages")
    ev.add_argument("--out", type=Path, default=None, help="write the eval JSON here")
    ev.set_defaults(func=cmd_eval)

    ex = subparsers.add_parser("export", help="ship a training checkpoint to ocrstream/assets/model")
    ex.add_argument("checkpoint", type=Path, help="a run's ckpt.pt or best.pt")
    ex.add_argument("--out", type=Path, default=ASSETS / "model")
    ex.add_argument("--lines", type=int, default=256, help="eval lines per line split for eval.json")
    ex.add_argument("--pages", type=int, default=12, help="eval pages for eval.json")
    ex.set_defaults(func=cmd_export)


def cmd_corpus(args: argparse.Namespace) -> int:
    from ocrstream.data.corpus import build_corpus, default_corpus_path

    print(json.dumps(build_corpus(args.out or default_corpus_path())))
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.fonts import heldout_fonts, train_fonts
    from ocrstream.data.render import PageGenerator

    corpus = load_corpus()
    text_split = "test" if args.split == "font" else args.split
    fonts = heldout_fonts() if args.split == "font" else train_fonts()
    gen = PageGenerator(corpus[text_split], fonts, args.size, split=args.split, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for i in range(args.n):
        p = gen.page(i, args.level)
        p.image.save(args.out / f"{args.split}-{i:05d}.png")
        (args.out / f"{args.split}-{i:05d}.txt").write_text(p.text + "\n")
        (args.out / f"{args.split}-{i:05d}.md").write_text(p.markdown + "\n")
    print(f"{args.n} pages in {args.out}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from ocrstream.data.samples import make_samples

    for p in make_samples(args.out):
        print(p)
    return 0


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from ocrstream.train.tokenizer import build_project_tokenizer

    tok = build_project_tokenizer(args.out, args.vocab)
    print(f"{args.out}: vocab {tok.get_vocab_size()}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ocrstream.train.line_recipe import STAGES
    from ocrstream.train.line_trainer import LineTrainConfig, LineTrainer

    tc = LineTrainConfig(run=args.run, max_minutes=args.minutes, **STAGES[args.stage])
    for k in ("steps", "batch", "threads", "lr", "seed", "init"):
        v = getattr(args, k)
        if v is not None:
            setattr(tc, k, v)
    st = LineTrainer(tc).run(progress=not args.no_progress)
    print(
        json.dumps(
            {"step": st.step, "lines": st.lines, "cpu_h": st.cpu_seconds / 3600, "best_cer": st.best_cer}
        )
    )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ocrstream.model.runtime import OcrModel
    from ocrstream.train.evaluate import evaluate_model, write_eval

    ocr = OcrModel.load(args.model)
    res = evaluate_model(ocr, n_lines=args.lines, n_pages=args.pages)
    if args.out:
        write_eval(res, args.out, {"model": str(args.model or "shipped")})
    print(json.dumps({k: {m: v for m, v in s.items() if m != "examples"} for k, s in res.items()}, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ocrstream.model.runtime import OcrModel
    from ocrstream.train.card import write_card
    from ocrstream.train.evaluate import evaluate_model, write_eval
    from ocrstream.train.export import export

    info = export(args.checkpoint, args.out)
    res = evaluate_model(OcrModel.load(args.out), n_lines=args.lines, n_pages=args.pages)
    write_eval(res, args.out / "eval.json", info)
    metrics = args.checkpoint.parent / "metrics.jsonl"
    write_card(args.out, metrics if metrics.exists() else None)
    print(json.dumps({k: s["cer"] for k, s in res.items()}, indent=2))
    return 0
