"""The compression curve: measured precision against compression ratio, per resolution mode.

Compression = text tokens (the model's tokenizer) / encoder vision tokens (the paper's Table 2
convention, as in ``ocrstream.train.evaluate``). Precision = max(0, 1 - CER) per page, CER with
whitespace collapsed (``ocrstream.textdist.cer``). Points are bucketed by compression; the
lookup interpolates within a mode's points after forcing them non-increasing (pool-adjacent-
violators), and beyond the last measured ratio assumes precision falls as 1/ratio (the page holds
more text than the tokens can carry). A mode with fewer than two points falls back to the pooled
points of all modes.

File format (``compression_curve.json``, stored beside the model)::

    {"schema": 1, "model": {...}, "chars_per_token": 3.2, "metric": "...",
     "modes": {"256": {"base_size": 256, "image_size": 256, "crop": false,
                        "points": [{"compression": 2.1, "precision": 0.9, "pages": 12}, ...]}},
     "provenance": {...}}

Run ``python -m ocrstream.compression.curve --checkpoint DIR`` to measure and write it.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ocrstream.model.modes import Mode, get_mode

log = logging.getLogger(__name__)

CURVE_FILE = "compression_curve.json"
SCHEMA = 1
# Compression-ratio bucket edges for measured points (open-ended last bucket); fine around one
# character per vision token, where a line reader's rungs live and precision falls steeply.
BUCKET_EDGES = (
    0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 12.0, 15.0, 20.0, 30.0,
)  # fmt: skip
# A measured point stands on at least this many pages: a thinner bucket joins its neighbour (one
# lucky page at a low ratio once made auto mode squeeze pages that then read at 0.74-0.91).
MIN_POINT_PAGES = 3
DEFAULT_CHARS_PER_TOKEN = 3.3  # project BPE tokenizer on English prose (small-model calibration note)


@dataclass(frozen=True)
class CurvePoint:
    compression: float
    precision: float
    pages: int = 1


@dataclass
class ModeCurve:
    mode: Mode
    points: list[CurvePoint] = field(default_factory=list)

    def monotone(self) -> list[CurvePoint]:
        """Points sorted by compression with precision forced non-increasing (weighted PAV)."""
        pts = sorted(self.points, key=lambda p: p.compression)
        blocks: list[list[float]] = []  # [sum_w*p, sum_w, n_points]
        for p in pts:
            blocks.append([p.precision * p.pages, float(p.pages), 1])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
                s, w, n = blocks.pop()
                blocks[-1][0] += s
                blocks[-1][1] += w
                blocks[-1][2] += n
        out, i = [], 0
        for s, w, n in blocks:
            for _ in range(int(n)):
                out.append(CurvePoint(pts[i].compression, s / w, pts[i].pages))
                i += 1
        return out


def interpolate(points: Sequence[CurvePoint], compression: float) -> float:
    """Precision at ``compression`` from monotone points (see module doc for the ends)."""
    if not points:
        raise ValueError("no curve points to interpolate")
    xs = [p.compression for p in points]
    if compression <= xs[0]:
        return points[0].precision
    if compression >= xs[-1]:
        last = points[-1]
        return last.precision * (last.compression / compression) if compression > 0 else last.precision
    j = bisect.bisect_right(xs, compression)
    a, b = points[j - 1], points[j]
    t = (compression - a.compression) / (b.compression - a.compression)
    return a.precision + t * (b.precision - a.precision)


@dataclass
class CompressionCurve:
    modes: dict[str, ModeCurve]
    chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
    model: dict = field(default_factory=dict)
    metric: str = "precision = max(0, 1 - CER); compression = text tokens / encoder vision tokens"
    provenance: dict = field(default_factory=dict)
    # true characters / the pixel estimate's (density.estimate), over the curve's own pages: the
    # curve is indexed by true compression, so an image estimate is scaled by it before a look-up
    density_scale: float = 1.0

    def mode(self, name: str) -> Mode:
        if name not in self.modes:
            raise KeyError(f"mode {name!r} not in the curve; it has {sorted(self.modes)}")
        return self.modes[name].mode

    def mode_objects(self) -> list[Mode]:
        return [mc.mode for mc in self.modes.values()]

    def pooled(self) -> list[CurvePoint]:
        pts = [p for mc in self.modes.values() for p in mc.points]
        return ModeCurve(Mode("pooled", 16, 16, False), pts).monotone()

    def expected_precision(self, mode: str | Mode, compression: float) -> float:
        name = mode.name if isinstance(mode, Mode) else get_mode(mode).name
        mc = self.modes.get(name)
        pts = mc.monotone() if mc is not None and len(mc.points) >= 2 else self.pooled()
        return interpolate(pts, compression)

    # ---- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "chars_per_token": self.chars_per_token,
            "density_scale": round(self.density_scale, 4),
            "metric": self.metric,
            "modes": {
                name: {
                    "base_size": mc.mode.base_size,
                    "image_size": mc.mode.image_size,
                    "crop": mc.mode.crop,
                    "points": [
                        {
                            "compression": round(p.compression, 4),
                            "precision": round(p.precision, 4),
                            "pages": p.pages,
                        }
                        for p in sorted(mc.points, key=lambda p: p.compression)
                    ],
                }
                for name, mc in self.modes.items()
            },
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> CompressionCurve:
        if raw.get("schema") != SCHEMA:
            raise ValueError(f"compression curve schema {raw.get('schema')!r}, expected {SCHEMA}")
        modes = {}
        for name, row in raw["modes"].items():
            mode = (
                get_mode(name)  # a lines rung: its squeeze is in its name
                if name.startswith("lines")
                else Mode(name, int(row["base_size"]), int(row["image_size"]), bool(row["crop"]))
            )
            pts = [
                CurvePoint(float(p["compression"]), float(p["precision"]), int(p.get("pages", 1)))
                for p in row["points"]
            ]
            modes[name] = ModeCurve(mode, pts)
        if not modes or not any(mc.points for mc in modes.values()):
            raise ValueError("compression curve has no measured points")
        return cls(
            modes,
            float(raw.get("chars_per_token", DEFAULT_CHARS_PER_TOKEN)),
            raw.get("model", {}),
            raw.get("metric", ""),
            raw.get("provenance", {}),
            float(raw.get("density_scale", 1.0)),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CompressionCurve:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read compression curve {path}: {exc}") from exc
        return cls.from_dict(raw)


def paper_curve() -> CompressionCurve:
    """The official model's reported Fox curve (paper Table 2; Tiny = 64, Small = 100 tokens).

    Reported, not measured here: the official model does not run at scale on this machine. Base
    and Large have no Fox points in the paper, so their lookups use the pooled points.
    """
    tiny = [
        (10.5, 0.965, 7),
        (11.8, 0.938, 28),
        (13.2, 0.838, 28),
        (15.1, 0.859, 14),
        (16.5, 0.793, 11),
        (17.7, 0.764, 8),
        (19.7, 0.591, 4),
    ]
    small = [
        (6.7, 0.985, 7),
        (7.5, 0.973, 28),
        (8.5, 0.968, 28),
        (9.7, 0.968, 14),
        (10.6, 0.915, 11),
        (11.3, 0.898, 8),
        (12.6, 0.871, 4),
    ]
    from ocrstream.model.modes import MODES

    modes = {
        "tiny": ModeCurve(MODES["tiny"], [CurvePoint(c, p, n) for c, p, n in tiny]),
        "small": ModeCurve(MODES["small"], [CurvePoint(c, p, n) for c, p, n in small]),
        "base": ModeCurve(MODES["base"], []),
        "large": ModeCurve(MODES["large"], []),
    }
    return CompressionCurve(
        modes,
        chars_per_token=4.0,  # a 129k-vocab English BPE; the official tokenizer is not shipped here
        model={"name": "deepseek-ocr", "source": "deepseek-ai/DeepSeek-OCR"},
        provenance={
            "source": "DeepSeek-OCR paper (arXiv 2510.18234) Table 2, Fox English pages, Free OCR prompt",
            "measured": False,
        },
    )


def bucket_points(samples: Iterable[tuple[float, float]], min_pages: int = 1) -> list[CurvePoint]:
    """(compression, precision) samples -> one mean point per BUCKET_EDGES bucket; buckets are
    joined left to right until each holds ``min_pages`` samples (a short last one joins the one
    before it)."""
    groups: dict[int, list[tuple[float, float]]] = {}
    for c, p in samples:
        groups.setdefault(bisect.bisect_right(BUCKET_EDGES, c) - 1, []).append((c, p))
    joined: list[list[tuple[float, float]]] = []
    for _, g in sorted(groups.items()):
        if joined and len(joined[-1]) < min_pages:
            joined[-1].extend(g)
        else:
            joined.append(list(g))
    if len(joined) > 1 and len(joined[-1]) < min_pages:
        joined[-2].extend(joined.pop())
    return [CurvePoint(sum(c for c, _ in g) / len(g), sum(p for _, p in g) / len(g), len(g)) for g in joined]


def curve_for(model_dir: str | Path | None = None, config_name: str | None = None) -> CompressionCurve:
    """The curve stored beside a model; the paper's for the official model when none is stored."""
    from ocrstream.model.runtime import SHIPPED_MODEL_DIR

    folder = Path(model_dir) if model_dir is not None else SHIPPED_MODEL_DIR
    path = folder / CURVE_FILE
    if path.exists():
        return CompressionCurve.load(path)
    if config_name == "deepseek-ocr":
        return paper_curve()
    raise FileNotFoundError(
        f"no {CURVE_FILE} in {folder}; measure it with `python -m ocrstream.compression.curve --checkpoint {folder}`"
    )


# ---- measurement ---------------------------------------------------------------------------------
@dataclass
class PageSample:
    mode: str
    text_tokens: int
    vision_tokens: int
    precision: float
    chars: int
    est_chars: float = 0.0  # the pixel density estimate of the page's characters

    @property
    def compression(self) -> float:
        return self.text_tokens / self.vision_tokens


def measure(
    model, pages: Sequence[tuple], modes: Sequence[Mode], max_new_tokens: int = 200, batch: int = 8
) -> list[PageSample]:  # noqa: ANN001
    """Read every (image, text) page in every mode with ``model`` (an OcrModel), greedy free OCR."""
    from ocrstream.compression.density import estimate
    from ocrstream.model.modes import num_encoder_tokens
    from ocrstream.textdist import cer

    est = [estimate(img).chars for img, _ in pages]
    out = []
    for mode in modes:
        for i in range(0, len(pages), batch):
            chunk = pages[i : i + batch]
            vts = model.encode_batch([img for img, _ in chunk], mode)
            res = model.decode(vts, prompt="free_ocr", max_new_tokens=max_new_tokens)
            for j, ((img, ref), r, vt) in enumerate(zip(chunk, res, vts, strict=True)):
                # a lines mode's tokens are its strips' (two layout slots each are not vision tokens)
                nv = (
                    sum(vt.view_lengths) - 2 * len(vt.view_lengths)
                    if mode.lines
                    else num_encoder_tokens(mode, *img.size)
                )
                if nv <= 0:
                    continue
                ntext = len(model.tokenizer.encode(ref))
                p = max(0.0, 1.0 - cer(ref, r.text))
                out.append(PageSample(mode.name, ntext, nv, p, len(ref), est[i + j]))
        done = [s for s in out if s.mode == mode.name]
        log.info(
            "mode %s: %d pages, mean precision %.3f",
            mode.name,
            len(done),
            sum(s.precision for s in done) / max(1, len(done)),
        )
    return out


def curve_from_samples(samples: Sequence[PageSample], modes: Sequence[Mode], **meta) -> CompressionCurve:  # noqa: ANN003
    by_mode = {
        m.name: ModeCurve(
            m,
            bucket_points(
                ((s.compression, s.precision) for s in samples if s.mode == m.name), MIN_POINT_PAGES
            ),
        )
        for m in modes
    }
    chars = sum(s.chars for s in samples)
    toks = sum(s.text_tokens for s in samples)
    est = sum(s.est_chars for s in samples)
    return CompressionCurve(
        by_mode,
        chars_per_token=chars / toks if toks else DEFAULT_CHARS_PER_TOKEN,
        density_scale=chars / est if est > 0 else 1.0,
        **meta,
    )


def eval_pages(n: int, size: int, seed: int = 11) -> list[tuple]:
    """Held-out pages of varied density: test-split text, training fonts, curriculum levels 0-3.

    Level 0 (a few words in large type: a title or a slide) gives the sparse end of the curve,
    where auto mode looks up cheap modes; without it that end is extrapolated flat.
    """
    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.fonts import train_fonts
    from ocrstream.data.render import PageGenerator

    gen = PageGenerator(load_corpus()["test"], train_fonts(), size, split="curve", seed=seed)
    levels = (0, 1, 2, 3, 3)  # full pages twice as often: they span the dense end
    return [(p.image, p.text) for p in (gen.page(i, levels[i % len(levels)]) for i in range(n))]


def line_model_pages(n: int, seed: int = 11) -> list[tuple]:
    """Held-out pages for a line-strip model: synthetic A4 PDFs (test-split text, training faces)
    rasterised at the pipeline's 144 dpi, with the text they show."""
    from ocrstream.data.corpus import load_corpus
    from ocrstream.data.fonts import train_fonts
    from ocrstream.data.pages import PageMaker
    from ocrstream.raster import Limits, rasterize

    maker = PageMaker(load_corpus()["test"], train_fonts(), "curve", seed)
    out = []
    for i in range(n):
        p = maker.page(i)
        _, it = rasterize(p.pdf, Limits())
        out.append((next(iter(it)).image, p.text))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="measure and store a model's compression curve")
    ap.add_argument("--checkpoint", type=Path, default=None, help="snapshot folder (default: shipped model)")
    ap.add_argument("--pages", type=int, default=48, help="pages per mode")
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--out", type=Path, default=None, help=f"default: CHECKPOINT/{CURVE_FILE}")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=Path, default=None, help="also write every page's sample (JSON)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    import torch

    from ocrstream.compression.ladder import model_ladder
    from ocrstream.model.runtime import SHIPPED_MODEL_DIR, OcrModel
    from ocrstream.provenance import git_commit

    torch.set_num_threads(args.threads)
    folder = args.checkpoint or SHIPPED_MODEL_DIR
    model = OcrModel.load(folder)
    modes = model_ladder(model.config)
    strips = model.config.sam.strips
    size = int(model.config.sam.img_size)  # the view the model was trained at: its "base" page
    pages = line_model_pages(args.pages) if strips else eval_pages(args.pages, size)
    samples = measure(model, pages, modes, args.max_new_tokens)
    curve = curve_from_samples(
        samples,
        modes,
        model={
            "name": model.config.name,
            "weights_id": model.weights_id,
            "checkpoint": "shipped (ocrstream/assets/model)" if args.checkpoint is None else str(folder),
        },
        provenance={
            "script": "python -m ocrstream.compression.curve",
            "pages_per_mode": args.pages,
            "page_size": "A4 at 144 dpi" if strips else size,
            "pages": (
                "synthetic A4 PDFs of held-out test-split text in the training faces (ocrstream.data.pages)"
                if strips
                else "held-out test-split text, training fonts, levels 0-3 (ocrstream.data.render)"
            ),
            "decode": (
                f"line decoding {model.config.line_decoding!r}, free_ocr, max_new_tokens={args.max_new_tokens}"
                if strips
                else f"greedy, free_ocr, max_new_tokens={args.max_new_tokens}"
            ),
            "min_point_pages": MIN_POINT_PAGES,
            "git_commit": git_commit(),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "measured": True,
        },
    )
    out = args.out or folder / CURVE_FILE
    curve.save(out)
    log.info("wrote %s", out)
    if args.samples:
        args.samples.write_text(
            json.dumps([{**asdict(x), "compression": x.compression} for x in samples]) + "\n"
        )
    json.dump(
        {m: [(p.compression, p.precision, p.pages) for p in mc.points] for m, mc in curve.modes.items()},
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
