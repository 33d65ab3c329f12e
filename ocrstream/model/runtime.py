"""High-level encode/decode API used by the services (`OcrModel`), per docs/architecture.md.

Mirrors the split the official vLLM integration makes (``deepseek_ocr.py``: images become
embeddings once; the decoder consumes them through `<image>` placeholders), so an encoder service
can cache ``VisionTokens`` and a decoder service can batch prompts from many pages.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from .ctc import CtcPrefixScorer, ctc_confidence, ctc_greedy
from .deepseek_ocr import DeepseekOCRForCausalLM
from .generation import NGRAM_IMAGE, SamplingParams, generate
from .lines import TextLine, find_text_lines, pad_strip, page_strips, strips_to_tensor
from .modes import Mode, get_mode, preprocess
from .page_text import page_text
from .reflow import reflow_views
from .tokenizer import PROMPTS, OcrTokenizer, resolve_prompt
from .weights import encoder_weights_id, load_snapshot

log = logging.getLogger(__name__)

SHIPPED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "model"
_VT_MAGIC = b"OCRVT1\n"


@dataclass
class VisionTokens:
    """One image's embeddings in prompt layout, ready to replace its `<image>` placeholders."""

    embeds: torch.Tensor  # [n_placeholders, hidden]
    mode: str
    grid: tuple[int, int]  # (W_t, H_t) tiles; (1, 1) = none
    image_size: tuple[int, int]  # original (width, height)
    weights_id: str = ""
    # reflow modes: ``views`` independent views of equal length, concatenated, each decoded alone
    views: int = 1
    # lines modes: each view is one strip (a text line, or a piece of a too-wide one) of its own
    # length; ``lines`` has one record per view: its TextLine geometry and "piece" index
    view_lengths: tuple[int, ...] = ()
    lines: tuple[dict, ...] = ()

    @property
    def n_placeholders(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def is_lines(self) -> bool:
        return bool(self.view_lengths) or (self.views == 0 and self.mode.startswith("lines"))

    def split_views(self) -> list[torch.Tensor]:
        """The embeddings of each independently decoded view ([n / views, hidden] each)."""
        if self.view_lengths:
            return list(self.embeds.split(list(self.view_lengths), dim=0))
        if self.views == 1:
            return [self.embeds]
        if self.views == 0:
            return []
        return list(self.embeds.chunk(self.views, dim=0))

    def validate(self, hidden: int | None = None) -> None:
        if self.embeds.dim() != 2 or (hidden is not None and self.embeds.shape[1] != hidden):
            raise ValueError(f"VisionTokens.embeds must be [n, {hidden}], got {tuple(self.embeds.shape)}")

    def to_bytes(self) -> bytes:
        t = self.embeds.detach().contiguous().cpu()
        header = json.dumps(
            {
                "shape": list(t.shape),
                "dtype": str(t.dtype).replace("torch.", ""),
                "mode": self.mode,
                "grid": list(self.grid),
                "image_size": list(self.image_size),
                "weights_id": self.weights_id,
                "views": self.views,
                "view_lengths": list(self.view_lengths),
                "lines": list(self.lines),
            }
        ).encode()
        return _VT_MAGIC + struct.pack("<I", len(header)) + header + t.view(torch.uint8).numpy().tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> VisionTokens:
        if not data.startswith(_VT_MAGIC):
            raise ValueError("not a VisionTokens blob (bad magic)")
        off = len(_VT_MAGIC)
        (n,) = struct.unpack("<I", data[off : off + 4])
        meta = json.loads(data[off + 4 : off + 4 + n])
        dtype = getattr(torch, meta["dtype"])
        raw = bytearray(data[off + 4 + n :])
        embeds = (
            torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(meta["shape"])
            if raw
            else torch.empty(meta["shape"], dtype=dtype)
        )
        return cls(
            embeds,
            meta["mode"],
            tuple(meta["grid"]),
            tuple(meta["image_size"]),
            meta["weights_id"],
            int(meta.get("views", 1)),
            tuple(int(n) for n in meta.get("view_lengths", ())),
            tuple(meta.get("lines", ())),
        )


def view_blobs(blob: bytes) -> list[bytes] | None:
    """A serialized reflowed page -> one serialized single-view ``VisionTokens`` per view, in order
    ([] for a blank page); None for ordinary tokens (decoded as they are). For remote decoders,
    which take one view per request. A blob that does not parse is left to the decoder to refuse."""
    try:
        vt = VisionTokens.from_bytes(blob)
    except (ValueError, KeyError, RuntimeError, struct.error):
        return None
    if vt.views == 1:
        return None
    return [
        VisionTokens(
            e, vt.mode, (1, 1), vt.image_size, vt.weights_id, 1, (len(e),) if vt.is_lines else (), line
        ).to_bytes()
        # a line's record travels as a one-element tuple
        for e, line in zip(
            vt.split_views(), [(d,) for d in vt.lines] if vt.lines else [()] * vt.views, strict=True
        )
    ]


def join_views(texts: Sequence[str]) -> str:
    """A reflowed page's text: its views' texts in order, one per line (empty views dropped)."""
    return "\n".join(t for t in (x.strip() for x in texts) if t)


@dataclass
class DecodeResult:
    text: str  # decoded with special tokens kept (grounding tags survive), stop token excluded
    token_ids: list[int]
    stopped: bool  # ended on EOS (False: hit max_new_tokens, e.g. runaway repetition)
    n_tokens: int


class OcrModel:
    def __init__(
        self,
        model: DeepseekOCRForCausalLM,
        tokenizer: OcrTokenizer,
        max_crops: int | None = None,
        weights_id: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.max_crops = max_crops or self.config.max_crops
        self.weights_id = weights_id or encoder_weights_id(model)
        eos = tokenizer.ids.get("eos")
        if eos is not None and eos != self.config.decoder.eos_token_id:
            log.warning(
                "tokenizer EOS %d differs from config eos_token_id %d; stopping on both",
                eos,
                self.config.decoder.eos_token_id,
            )

    @classmethod
    def load(
        cls,
        checkpoint_dir: str | Path | None = None,
        device: str = "cpu",
        dtype: torch.dtype | str | None = None,
        max_crops: int | None = None,
    ) -> OcrModel:
        """Load a snapshot folder (config.json, safetensors, tokenizer.json); None -> the shipped model."""
        folder = Path(checkpoint_dir) if checkpoint_dir is not None else SHIPPED_MODEL_DIR
        if not (folder / "config.json").exists():
            hint = (
                " (the shipped embedded model is not installed yet: train it with `ocrstream train` or pass"
                " --checkpoint DIR with an official DeepSeek-OCR snapshot)"
                if checkpoint_dir is None
                else ""
            )
            raise FileNotFoundError(f"no model checkpoint at {folder}: config.json missing{hint}")
        model = load_snapshot(folder, dtype=dtype, device=device)
        tok = OcrTokenizer.from_file(folder / "tokenizer.json", image_token_id=model.config.image_token_id)
        return cls(model, tok, max_crops=max_crops)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def preprocess(self, image: Image.Image, mode: str | Mode | None = None):  # noqa: ANN201 - ImageInput
        mode = self.config.default_mode if mode is None else mode
        return preprocess(image, mode, max_crops=self.max_crops, min_crops=self.config.min_crops)

    @torch.no_grad()
    def encode_batch(
        self, images: Sequence[Image.Image], mode: str | Mode | None = None
    ) -> list[VisionTokens]:
        """None -> the config's default_mode (gundam for the official model)."""
        m = get_mode(self.config.default_mode if mode is None else mode)
        if m.lines:
            return self._encode_lines(images, m)
        if self.config.sam.strips:
            raise ValueError(f"{self.config.name} reads text lines: use a lines mode, not {m.name!r}")
        if m.reflow:
            return [self._encode_reflow(img, m) for img in images]
        inputs = [self.preprocess(img, m) for img in images]
        feats = self.model.encode_images(inputs)
        return [
            VisionTokens(e, m.name, inp.grid, inp.image_size, self.weights_id)
            for e, inp in zip(feats.embeds, inputs, strict=True)
        ]

    def _encode_reflow(self, image: Image.Image, m: Mode) -> VisionTokens:
        views = reflow_views(image, m.base_size)
        hidden = self.config.decoder.hidden_size
        if not views:  # a blank page: no text lines, nothing to read
            embeds = torch.zeros(0, hidden, dtype=self.model.dtype)
        else:
            one = get_mode(str(m.base_size))
            feats = self.model.encode_images([self.preprocess(v, one) for v in views])
            embeds = torch.cat(list(feats.embeds), dim=0)
        return VisionTokens(embeds, m.name, (1, 1), image.size, self.weights_id, views=len(views))

    # strips encoded per forward pass: bounds memory on long documents, keeps batches efficient
    LINE_BATCH = 64

    def _encode_lines(self, images: Sequence[Image.Image], m: Mode) -> list[VisionTokens]:
        """Every text line of every page as one strip; strips of equal padded width share a batch."""
        sam = self.config.sam
        if not sam.strips:
            raise ValueError(
                f"mode {m.name!r} needs a line-strip model; {self.config.name} reads square views"
            )
        pages: list[list[tuple[dict, Image.Image]]] = []
        for img in images:
            lines = find_text_lines(img)
            views = []
            for ln, pieces in zip(
                lines, page_strips(img, lines, sam.strip_height, m.squeeze, sam.max_width), strict=True
            ):
                for j, piece in enumerate(pieces):
                    views.append(
                        ({**ln.to_json(), "piece": j}, pad_strip(piece, sam.width_multiple, sam.max_width))
                    )
            pages.append(views)
        by_width: dict[int, list[tuple[int, int]]] = {}
        for p, views in enumerate(pages):
            for v, (_, strip) in enumerate(views):
                by_width.setdefault(strip.width, []).append((p, v))
        embeds: dict[tuple[int, int], torch.Tensor] = {}
        for width, items in by_width.items():
            for k in range(0, len(items), self.LINE_BATCH):
                chunk = items[k : k + self.LINE_BATCH]
                pixels = strips_to_tensor([pages[p][v][1] for p, v in chunk], width)
                tokens = self.model.encode_strips(pixels.to(self.device, self.model.dtype)).projected
                for (p, v), t in zip(chunk, tokens, strict=True):
                    embeds[(p, v)] = self.model.layout_strip(t)
        hidden = self.config.decoder.hidden_size
        out = []
        for p, (img, views) in enumerate(zip(images, pages, strict=True)):
            rows = [embeds[(p, v)] for v in range(len(views))]
            e = torch.cat(rows, dim=0) if rows else torch.zeros(0, hidden, dtype=self.model.dtype)
            out.append(
                VisionTokens(
                    e.cpu(),
                    m.name,
                    (1, 1),
                    img.size,
                    self.weights_id,
                    views=len(rows),
                    view_lengths=tuple(int(r.shape[0]) for r in rows),
                    lines=tuple(d for d, _ in views),
                )
            )
        return out

    def encode(self, image: Image.Image, mode: str | Mode | None = None) -> VisionTokens:
        return self.encode_batch([image], mode)[0]

    @torch.no_grad()
    def decode(
        self,
        vision: Sequence[VisionTokens | Sequence[VisionTokens]],
        prompt: str = "free_ocr",
        max_new_tokens: int = 2048,
        temperature: float = 0.0,
        ngram: tuple[int, int] | None = NGRAM_IMAGE,
        top_p: float = 1.0,
        seed: int | None = None,
        **prompt_fields: str,
    ) -> list[DecodeResult]:
        """One result per entry of ``vision`` (a VisionTokens, or several for multi-image prompts)."""
        text = resolve_prompt(prompt, **prompt_fields)
        flat = [v for item in vision for v in ([item] if isinstance(item, VisionTokens) else item)]
        if any(vt.is_lines for vt in flat):
            if any(not isinstance(item, VisionTokens) or not item.is_lines for item in vision):
                raise ValueError("line-strip VisionTokens are decoded one page per entry, not mixed")
            return self._decode_lines(list(vision), text, max_new_tokens)  # type: ignore[arg-type]
        rows, embeds = [], []
        owner: list[int] = []  # generation row -> entry of ``vision`` (reflowed pages have several)
        reflowed: set[int] = set()
        hidden = self.config.decoder.hidden_size
        for i, item in enumerate(vision):
            vts = [item] if isinstance(item, VisionTokens) else list(item)
            for vt in vts:
                vt.validate(hidden)
                if vt.weights_id and vt.weights_id != self.weights_id:
                    raise ValueError(
                        f"VisionTokens from encoder {vt.weights_id}, this model is {self.weights_id}"
                    )
            if any(vt.views != 1 for vt in vts):
                if len(vts) != 1:
                    raise ValueError(
                        "reflowed VisionTokens cannot be combined with other images in one prompt"
                    )
                reflowed.add(i)
                for view in vts[0].split_views():
                    rows.append(self.tokenizer.build_input_ids(text, [view.shape[0]]))
                    embeds.append([view.to(self.device, self.model.dtype)])
                    owner.append(i)
                continue
            rows.append(self.tokenizer.build_input_ids(text, [vt.n_placeholders for vt in vts]))
            embeds.append([vt.embeds.to(self.device, self.model.dtype) for vt in vts])
            owner.append(i)
        stop = {self.config.decoder.eos_token_id}
        if self.tokenizer.ids.get("eos") is not None:
            stop.add(self.tokenizer.ids["eos"])
        params = SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            ngram=ngram,
            ngram_whitelist=tuple(self.config.ngram_whitelist),
            stop_ids=tuple(sorted(stop)),
        )
        gen = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        out = generate(self.model, rows, embeds, params, generator=gen) if rows else None
        parts: list[list[tuple[list[int], bool]]] = [[] for _ in vision]
        if out is not None:
            for i, seq, stopped in zip(owner, out.sequences, out.stopped, strict=True):
                parts[i].append((seq, stopped))
        results = []
        for i, views in enumerate(parts):
            if i not in reflowed:
                (seq, stopped), *_ = views
                results.append(DecodeResult(self.tokenizer.decode(seq), seq, stopped, len(seq)))
                continue
            # a reflowed page: its views' texts in order, one per line ("" for a blank page)
            texts = [self.tokenizer.decode(seq) for seq, _ in views]
            ids = [t for seq, _ in views for t in seq]
            stopped = all(st for _, st in views)
            results.append(DecodeResult(join_views(texts), ids, stopped, len(ids)))
        return results

    def _decode_lines(
        self, pages: list[VisionTokens], prompt: str, max_new_tokens: int
    ) -> list[DecodeResult]:
        """Read every strip of every page (one batch), then put each page together (page_text)."""
        for vt in pages:
            vt.validate(self.config.decoder.hidden_size)
            if vt.weights_id and vt.weights_id != self.weights_id:
                raise ValueError(
                    f"VisionTokens from encoder {vt.weights_id}, this model is {self.weights_id}"
                )
        views = [
            (i, e.to(self.device, self.model.dtype)) for i, vt in enumerate(pages) for e in vt.split_views()
        ]
        seqs = self.read_strips([e for _, e in views], max_new_tokens, pages[0].mode if pages else "lines")
        per_page: list[list[list[int]]] = [[] for _ in pages]
        for (i, _), seq in zip(views, seqs, strict=True):
            per_page[i].append(seq)
        results = []
        for vt, page_seqs in zip(pages, per_page, strict=True):
            texts, lines = [], []
            for rec, seq in zip(vt.lines, page_seqs, strict=True):
                t = self.tokenizer.decode(seq, skip_special_tokens=True)
                if rec.get("piece", 0) and texts:  # a piece of a too-wide line continues it
                    texts[-1] = f"{texts[-1]} {t}"
                    continue
                texts.append(t)
                lines.append(TextLine.from_json(rec))
            ids = [t for seq in page_seqs for t in seq]
            results.append(DecodeResult(page_text(lines, texts, prompt, vt.image_size), ids, True, len(ids)))
        return results

    def strip_tokens(self, width: int) -> int:
        """Vision tokens of a strip ``width`` px wide (after padding to the width multiple)."""
        sam = self.config.sam
        padded = min(sam.max_width, -(-width // sam.width_multiple) * sam.width_multiple)
        return padded // sam.token_px[1]

    @torch.no_grad()
    def read_line_images(
        self, strips: Sequence[Image.Image], mode: str = "lines", max_new_tokens: int = 512
    ) -> list[str]:
        """Texts of already cut line strips (``ocrstream.model.lines.line_strip`` images), in order."""
        seqs = self.read_strips(self.line_views(strips), max_new_tokens, mode)
        return [self.tokenizer.decode(s, skip_special_tokens=True) for s in seqs]

    @torch.no_grad()
    def line_views(self, strips: Sequence[Image.Image]) -> list[torch.Tensor]:
        """Each strip's prompt embeddings [n + 2, hidden] (what ``read_strips`` reads), in order."""
        sam = self.config.sam
        padded = [pad_strip(s.convert("L"), sam.width_multiple, sam.max_width) for s in strips]
        views: list[torch.Tensor | None] = [None] * len(padded)
        by_width: dict[int, list[int]] = {}
        for i, s in enumerate(padded):
            by_width.setdefault(s.width, []).append(i)
        for width, idx in by_width.items():
            for k in range(0, len(idx), self.LINE_BATCH):
                chunk = idx[k : k + self.LINE_BATCH]
                pixels = strips_to_tensor([padded[i] for i in chunk], width).to(self.device, self.model.dtype)
                for i, t in zip(chunk, self.model.encode_strips(pixels).projected, strict=True):
                    views[i] = self.model.layout_strip(t)
        return [v for v in views if v is not None]

    @torch.no_grad()
    def read_strips(
        self, views: list[torch.Tensor], max_new_tokens: int = 512, mode: str = "lines"
    ) -> list[list[int]]:
        """Token ids of each strip (its prompt embeddings [n + 2, hidden]), by the config's
        ``line_decoding``: greedy CTC, the decoder alone, or the decoder guided by CTC.

        Strips are read in batches of similar length: a batch decodes until its longest strip is
        done, so mixing a page number with a full line would keep the short row busy for nothing."""
        order = sorted(range(len(views)), key=lambda i: views[i].shape[0])
        out: list[list[int]] = [[] for _ in views]
        for k in range(0, len(order), self.DECODE_BATCH):
            idx = order[k : k + self.DECODE_BATCH]
            for i, seq in zip(
                idx, self._read_strip_batch([views[i] for i in idx], max_new_tokens, mode), strict=True
            ):
                out[i] = seq
        return out

    DECODE_BATCH = 64  # strips decoded together
    # guided decoding checks this many labels of the CTC reading per decoder pass (the same
    # tokens as one per pass, in fewer passes: ``generation._speculate``)
    GUIDED_DRAFT = 8

    def _read_strip_batch(self, views: list[torch.Tensor], max_new_tokens: int, mode: str) -> list[list[int]]:
        if not views:
            return []
        cfg = self.config
        method = cfg.line_decoding
        pad = cfg.decoder.pad_token_id
        n = [int(v.shape[0]) - 2 for v in views]  # the strip's vision tokens (no newline/separator)
        longest = max(n)
        tokens = torch.zeros(
            len(views), max(1, longest), cfg.decoder.hidden_size, dtype=self.model.dtype, device=self.device
        )
        for i, v in enumerate(views):
            tokens[i, : n[i]] = v[: n[i]]
        logits = self.model.ctc_logits(tokens) if cfg.ctc_head else None  # [B, T, V]
        if method == "ctc":
            return ctc_greedy(logits, pad, n)
        if method == "fallback":
            # greedy CTC where it is sure of every frame; the decoder, guided by CTC, elsewhere
            out = ctc_greedy(logits, pad, n)
            conf = ctc_confidence(logits, n)
            unsure = [i for i, c in enumerate(conf) if c < cfg.ctc_confidence]
            if unsure:
                again = self._decode_guided(
                    [views[i] for i in unsure],
                    logits[unsure],
                    [n[i] for i in unsure],
                    max_new_tokens,
                    mode,
                    "guided",
                )
                for i, seq in zip(unsure, again, strict=True):
                    out[i] = seq
            return out
        return self._decode_guided(views, logits, n, max_new_tokens, mode, method)

    def _decode_guided(
        self,
        views: list[torch.Tensor],
        logits: torch.Tensor | None,
        n: list[int],
        max_new_tokens: int,
        mode: str,
        method: str,
    ) -> list[list[int]]:
        """The decoder over strips, alone (``ar``) or with CTC prefix scores (``guided``)."""
        cfg = self.config
        pad = cfg.decoder.pad_token_id
        # a strip of n tokens holds at most about n / squeeze characters: a cap per row stops a
        # runaway row without holding the batch to max_new_tokens
        squeeze = get_mode(mode).squeeze if mode.startswith("lines") else 1.0
        caps = [min(max_new_tokens, int(k / max(squeeze, 0.1) * 1.2) + 8) for k in n]
        prompt_text = PROMPTS["free_ocr"]
        rows = [self.tokenizer.build_input_ids(prompt_text, [k + 2]) for k in n]
        scorer = None
        if method == "guided":
            lengths = torch.tensor(n)
            scorer = CtcPrefixScorer(logits.log_softmax(-1), pad, lengths)
        stop = {cfg.decoder.eos_token_id}
        if self.tokenizer.ids.get("eos") is not None:
            stop.add(self.tokenizer.ids["eos"])
        params = SamplingParams(max_new_tokens=max(caps), ngram=None, stop_ids=tuple(sorted(stop)))
        out = generate(
            self.model,
            rows,
            [[v] for v in views],
            params,
            ctc=scorer,
            ctc_weight=cfg.ctc_weight,
            max_new=caps,
            draft=self.GUIDED_DRAFT if method == "guided" else 0,
        )
        return out.sequences

    def ocr(
        self, image: Image.Image, mode: str | Mode = "base", prompt: str = "free_ocr", **kw
    ) -> DecodeResult:  # noqa: ANN003
        return self.decode([self.encode(image, mode)], prompt=prompt, **kw)[0]
