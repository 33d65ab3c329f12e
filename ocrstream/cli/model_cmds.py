"""`ocrstream checkpoint verify DIR` and `ocrstream ocr FILE...` (the model's own commands).

`checkpoint verify` builds the model from DIR/config.json on the meta device and compares names
and shapes with the safetensors headers (no tensor data read). `ocr` runs the model in-process on
images and PDFs (rendered with pypdfium2 at 144 dpi like the official PDF script) and writes
markdown (plus boxes as JSON for grounding prompts).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

PDF_DPI = 144  # the official PDF script renders at zoom 2.0


def register(subparsers: argparse._SubParsersAction) -> None:
    ck = subparsers.add_parser("checkpoint", help="model checkpoint tools")
    ck_sub = ck.add_subparsers(dest="checkpoint_command", metavar="ACTION")
    ver = ck_sub.add_parser(
        "verify", help="check a snapshot folder's tensor names/shapes against its config.json"
    )
    ver.add_argument("dir", type=Path)
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    ver.set_defaults(func=cmd_verify)
    ck.set_defaults(func=lambda a: (ck.print_help(), 2)[1])

    ocr = subparsers.add_parser("ocr", help="OCR images/PDFs in-process")
    ocr.add_argument("files", nargs="+", type=Path)
    ocr.add_argument(
        "--checkpoint", type=Path, default=None, help="snapshot folder (default: the shipped model)"
    )
    ocr.add_argument(
        "--mode",
        default=None,
        help="tiny|small|base|large|gundam|gundam-m, a size spec like 512 / 1024x640, or auto (per page from"
        " text density; docs/compression.md) (default: the model's)",
    )
    ocr.add_argument(
        "--prompt", default="markdown", help="prompt name (free_ocr, markdown, grounding, ...) or text"
    )
    ocr.add_argument("--out", type=Path, default=None, help="write <name>.md (+ <name>.json) here")
    ocr.add_argument("--max-new-tokens", type=int, default=4096)
    ocr.add_argument("--batch", type=int, default=4, help="pages decoded together")
    ocr.add_argument("--device", default="cpu")
    ocr.add_argument("--dtype", default=None, help="bfloat16|float32 (default: the checkpoint's)")
    ocr.add_argument("--max-crops", type=int, default=None, help="tile ceiling for gundam modes (default 9)")
    ocr.add_argument("--dpi", type=int, default=PDF_DPI)
    ocr.add_argument(
        "--skip-repeat", action="store_true", help="drop pages that never emitted EOS (official PDF)"
    )
    ocr.set_defaults(func=cmd_ocr)


def cmd_verify(args: argparse.Namespace) -> int:
    from ocrstream.model.weights import CheckpointError, verify_snapshot

    try:
        rep = verify_snapshot(args.dir)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(
            json.dumps(
                {
                    "ok": rep.ok,
                    "expected": rep.n_expected,
                    "found": rep.n_found,
                    "missing": rep.missing,
                    "unexpected": rep.unexpected,
                    "misshapen": [
                        {"name": n, "expected": list(w), "found": list(g)} for n, w, g in rep.misshapen
                    ],
                    "errors": rep.other,
                },
                indent=2,
            )
        )
    else:
        for line in rep.lines():
            print(line)
        print("OK: exact match" if rep.ok else "FAILED")
    return 0 if rep.ok else 1


def load_pages(path: Path, dpi: int = PDF_DPI):  # noqa: ANN201 - list[PIL.Image]
    """Images of a file: every page of a PDF (rendered at dpi), or the image itself."""
    from ocrstream.model.modes import load_image

    if not path.exists():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.suffix.lower() == ".pdf":
        import pypdfium2 as pdfium

        try:
            doc = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            raise ValueError(f"cannot open PDF {path}: {exc}") from exc
        try:
            return [doc[i].render(scale=dpi / 72).to_pil().convert("RGB") for i in range(len(doc))]
        finally:
            doc.close()
    return [load_image(str(path))]


def count_pages(path: Path) -> int:
    """Pages ``load_pages`` will return, without rendering (0 when unreadable: reported later)."""
    if path.suffix.lower() != ".pdf":
        return 1 if path.exists() else 0
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(str(path))
    except (pdfium.PdfiumError, OSError):
        return 0
    try:
        return len(doc)
    finally:
        doc.close()


def cmd_ocr(args: argparse.Namespace) -> int:
    from ocrstream.cli import progress
    from ocrstream.compression.hooks import encode_batch_auto
    from ocrstream.model.generation import NGRAM_IMAGE, NGRAM_PDF
    from ocrstream.model.grounding import clean_text, join_pages, to_markdown
    from ocrstream.model.runtime import OcrModel
    from ocrstream.model.tokenizer import is_grounding_prompt

    try:
        model = OcrModel.load(args.checkpoint, device=args.device, dtype=args.dtype, max_crops=args.max_crops)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mode = args.mode or model.config.default_mode
    grounding = is_grounding_prompt(args.prompt)
    write = args.out is not None or len(args.files) > 1
    out_dir = args.out or Path.cwd()
    counts = [count_pages(p) for p in args.files]  # the bar's total (ETA) before any rendering
    status, done, total = 0, 0, sum(counts)
    with progress.PageBar(progress.wanted()) as bar:
        bar.update(done, total)
        for path, counted in zip(args.files, counts, strict=True):
            try:
                pages = load_pages(path, args.dpi)
            except (FileNotFoundError, ValueError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                status = 1
                total -= counted
                bar.update(done, total)
                continue
            total += len(pages) - counted
            ngram = NGRAM_PDF if path.suffix.lower() == ".pdf" else NGRAM_IMAGE
            texts, page_json = [], []
            for start in range(0, len(pages), max(1, args.batch)):
                chunk = pages[start : start + args.batch]
                vts = encode_batch_auto(model, chunk, mode, args.checkpoint)  # compression: also takes "auto"
                results = model.decode(
                    vts, prompt=args.prompt, max_new_tokens=args.max_new_tokens, ngram=ngram
                )
                for offset, (img, res) in enumerate(zip(chunk, results, strict=True)):
                    page_no = start + offset
                    if not res.stopped:
                        log.warning(
                            "%s page %d hit max_new_tokens without EOS (runaway output?)", path, page_no + 1
                        )
                        if args.skip_repeat:
                            continue
                    if grounding:
                        md = to_markdown(
                            res.text,
                            img.width,
                            img.height,
                            page_image=img if write else None,
                            out_dir=out_dir if write else None,
                            image_prefix=f"{path.stem}_images/{page_no}",
                        )
                        texts.append(md.text)
                        page_json.append(
                            {
                                "page": page_no + 1,
                                "width": img.width,
                                "height": img.height,
                                "blocks": [b.to_dict() for b in md.blocks],
                            }
                        )
                    else:
                        texts.append(clean_text(res.text))
                done += len(chunk)
                bar.update(done, total)
            markdown = join_pages(texts)
            if not write:
                bar.print(markdown)
                continue
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{path.stem}.md").write_text(markdown + "\n")
            if grounding:
                (out_dir / f"{path.stem}.json").write_text(
                    json.dumps({"file": str(path), "mode": mode, "pages": page_json}, indent=2) + "\n"
                )
            log.info("wrote %s", out_dir / f"{path.stem}.md")
    return status
