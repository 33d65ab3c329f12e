"""A context store that keeps text as vision tokens and lets old context fade (paper section 5).

Each added text segment is rendered to one or more same-size pages (``render.PageRenderer``); each
page is one stored *segment*. The page image goes to the durable store once; its vision tokens are
encoded at the segment's current rung of the model's ladder (``ladder.model_ladder``: Large ->
Base -> Small -> Tiny, or the scaled sizes of a small model) and kept in the hot cache and the
durable store. After every insert ``planner.plan_levels`` re-plans all rungs under the token budget
(counted in decoder placeholders, what a prefix really costs); a segment whose rung went down is
re-encoded from its page at the lower resolution, and one that falls off the last rung is deleted,
page and tokens: forgotten.

Page images are made as every page image is (``ocrstream.raster``: ``fit_image``, ``png_bytes``);
tokens live in the token tiers (cache in front of the store, ``ocrstream.cache.tiers``); read-back
decodes through the decoder's own settings, guard and temperature ladder (``ocrstream.guard``).

Keys (store and cache, built by ``ocrstream.layout``), under ``context/<name>/``: ``manifest.json``
(config + segment table), ``pages/<seq>.png``, ``tokens/<seq>.<mode>.vt`` (``VisionTokens.to_bytes``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from PIL import Image

from ocrstream import layout, raster
from ocrstream.cache.base import Cache
from ocrstream.cache.tiers import TokenTiers
from ocrstream.compression.ladder import model_ladder, page_tokens
from ocrstream.compression.planner import plan_cost, plan_levels
from ocrstream.compression.render import PageRenderer
from ocrstream.errors import NotFound, PermanentError
from ocrstream.guard import DecodeSettings, PageRead, Rung, read_down_ladder, sampling_seed
from ocrstream.model.grounding import to_markdown
from ocrstream.model.modes import Mode, get_mode
from ocrstream.model.runtime import VisionTokens
from ocrstream.store.base import Store, get_json, put_json

log = logging.getLogger(__name__)

UNINFORMATIVE = 0.2  # a curve this low everywhere says the model cannot read: it cannot rank rungs
# A line reader has no view size: its context pages are document-like, 1024 px square with 20-px
# type (the band of 10-pt text at 144 dpi), about 35 lines a page.
STRIP_PAGE_SIZE = 1024
STRIP_PAGE_FONT_PX = 20
_FILLER = "context kept as an image fades like a memory while the newest text stays sharp "


def default_page_size(config) -> int:  # noqa: ANN001 - DeepseekOCRConfig
    return STRIP_PAGE_SIZE if config.sam.strips else int(config.sam.img_size)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MANIFEST_VERSION = 1


def curve_ladder(
    model,  # noqa: ANN001 - OcrModel
    curve=None,  # noqa: ANN001 - CompressionCurve | None
    page_size: int | None = None,
    fill: float = 0.6,
) -> tuple[list[Mode], list[float] | None]:
    """The model's ladder and, with a measured curve, each rung's expected precision for a page
    ``fill`` full; rungs that cost more but read no better than a cheaper one are left out (a
    model trained at one view size may read worse when upscaled)."""
    ladder = list(model_ladder(model.config))
    if curve is None:
        return ladder, None
    size = int(page_size or default_page_size(model.config))
    strips = all(m.lines for m in ladder)
    renderer = PageRenderer(size, font_px=STRIP_PAGE_FONT_PX if strips else None)
    text_tokens = fill * renderer.chars_per_page / curve.chars_per_token
    probe = renderer.render(_FILLER * (1 + int(fill * renderer.chars_per_page) // len(_FILLER)))[0].image
    rows = []
    for m in ladder:
        enc = page_tokens(m, (size, size), probe)[1]
        rows.append((m, curve.expected_precision(m, text_tokens / max(1, enc))))
    if max(q for _, q in rows) < UNINFORMATIVE:
        log.warning("curve expects < %.2f precision on every rung: keeping the plain ladder", UNINFORMATIVE)
        return ladder, None
    kept = [(m, q) for i, (m, q) in enumerate(rows) if all(q > q2 for _, q2 in rows[i + 1 :])]
    return [m for m, _ in kept], [q for _, q in kept]


def model_curve(model_dir=None):  # noqa: ANN001, ANN201 - Path | str | None -> CompressionCurve | None
    """The curve beside a model folder (None = shipped), or None when it has none."""
    from ocrstream.compression.curve import curve_for

    try:
        return curve_for(model_dir)
    except FileNotFoundError:
        return None


@dataclass
class Segment:
    seq: int  # insertion order over the store's life
    rung: int  # index into the ladder; len(ladder) = dropped
    chars: int  # characters drawn on the page
    added_at: float  # unix time
    group: int  # the add() call it came from (a long text spans several pages)
    mode: str = ""  # current mode name ("" when dropped)
    tokens: int = 0  # decoder placeholders held now
    costs: list[int] = field(
        default_factory=list
    )  # placeholders per rung (a line reader's page costs its lines)


@dataclass
class ReadSegment:
    segment: Segment
    text: str  # the accepted read (else the first), post-processed as the decoder's pages are
    stopped: bool
    outcome: str = "ok"  # the guard's verdict on that read: ok | loop | no_stop
    attempts: list[dict] = field(default_factory=list)  # one per ladder rung tried


@dataclass
class _Read(PageRead):
    blob: bytes = b""


class ContextStore:
    def __init__(
        self,
        name: str,
        model,  # noqa: ANN001 - OcrModel-like: encode(image, mode), decode([...]), weights_id
        ladder: Sequence[Mode | str],
        budget_tokens: int,
        store: Store,
        cache: Cache | None = None,
        *,
        page_size: int | None = None,
        half_life: float = 4.0,
        keep_sharp: int = 1,
        quality: Sequence[float] | None = None,
        cache_ttl_s: int | None = None,
        max_segments: int = 256,
        decode: DecodeSettings | None = None,
    ) -> None:
        """``max_segments``: kept segments at most (older ones are forgotten past it); an add that
        alone renders more pages is refused (PermanentError ``context_full``). ``decode``: how
        ``read_text`` decodes (default: the decoder service's defaults, ``DecoderConfig``)."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"context name {name!r} must match {_NAME.pattern}")
        self.name = name
        self.model = model
        self.ladder = tuple(get_mode(m) for m in ladder)
        if not self.ladder:
            raise ValueError("empty mode ladder")
        self.page_size = int(page_size or default_page_size(model.config))
        self.lines = all(m.lines for m in self.ladder)
        # square views: every page costs the same per rung; a line reader's page costs its lines
        self.costs = (
            [] if self.lines else [page_tokens(m, (self.page_size, self.page_size))[0] for m in self.ladder]
        )
        if any(a <= b for a, b in zip(self.costs, self.costs[1:], strict=False)):
            raise ValueError(
                f"ladder {[m.name for m in self.ladder]} must cost strictly fewer tokens per rung, got {self.costs}"
            )
        if budget_tokens < 0:
            raise ValueError(f"budget_tokens must be >= 0, got {budget_tokens}")
        self.budget = int(budget_tokens)
        self.store = store
        self.cache = cache
        self.tiers = TokenTiers(cache, store, ttl_s=cache_ttl_s)
        self.decode_settings = decode or DecodeSettings.from_config()
        self.limits = raster.Limits()
        self.half_life = float(half_life)
        self.keep_sharp = int(keep_sharp)
        self.quality = list(quality) if quality is not None else None
        self.cache_ttl_s = cache_ttl_s
        if max_segments < 1:
            raise ValueError(f"max_segments must be >= 1, got {max_segments}")
        self.max_segments = int(max_segments)
        self.renderer = PageRenderer(self.page_size, font_px=STRIP_PAGE_FONT_PX if self.lines else None)
        self.segments: list[Segment] = []  # oldest first; dropped ones are removed
        self.next_seq = 0
        self.next_group = 0
        self.forgotten = 0
        self._lock = threading.Lock()

    # ---- persistence -------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return layout.context_prefix(self.name)

    def _page_key(self, seq: int) -> str:
        return layout.context_page_key(self.name, seq)

    def _tok_key(self, seq: int, mode: str) -> str:
        return layout.context_token_key(self.name, seq, mode)

    def token_key(self, seg: Segment) -> str:
        """Store/cache key of a kept segment's current vision tokens."""
        return self._tok_key(seg.seq, seg.mode)

    def save_manifest(self) -> None:
        put_json(
            self.store,
            layout.context_manifest_key(self.name),
            {
                "version": MANIFEST_VERSION,
                "name": self.name,
                "ladder": [
                    {"name": m.name, "base_size": m.base_size, "image_size": m.image_size, "crop": m.crop}
                    for m in self.ladder
                ],
                "budget_tokens": self.budget,
                "page_size": self.page_size,
                "half_life": self.half_life,
                "keep_sharp": self.keep_sharp,
                "quality": self.quality,
                "weights_id": getattr(self.model, "weights_id", ""),
                "next_seq": self.next_seq,
                "next_group": self.next_group,
                "forgotten": self.forgotten,
                "segments": [asdict(s) for s in self.segments],
            },
        )

    @classmethod
    def open(cls, name: str, model, store: Store, cache: Cache | None = None, **create: Any) -> ContextStore:  # noqa: ANN001
        """Load ``name`` from ``store``; create it with ``create`` (ladder, budget_tokens...) if absent."""
        try:
            raw = get_json(store, layout.context_manifest_key(name))
        except NotFound:
            if "ladder" not in create or "budget_tokens" not in create:
                raise NotFound(
                    f"no context {name!r} in the store; create it with a ladder and a budget"
                ) from None
            cs = cls(name, model, store=store, cache=cache, **create)
            cs.save_manifest()
            return cs
        if raw.get("version") != MANIFEST_VERSION:
            raise ValueError(
                f"context {name!r} manifest version {raw.get('version')!r}, expected {MANIFEST_VERSION}"
            )
        wid = getattr(model, "weights_id", "")
        if raw.get("weights_id") and wid and raw["weights_id"] != wid:
            raise PermanentError(
                f"context {name!r} was encoded by {raw['weights_id']}, this model is {wid}",
                reason="context_conflict",
            )
        ladder = [
            get_mode(r["name"])
            if r["name"].startswith("lines")
            else Mode(r["name"], r["base_size"], r["image_size"], r["crop"])
            for r in raw["ladder"]
        ]
        budget = int(create.get("budget_tokens", raw["budget_tokens"]))
        cs = cls(
            name,
            model,
            ladder,
            raw["budget_tokens"],
            store,
            cache,
            page_size=raw["page_size"],
            half_life=raw["half_life"],
            quality=raw.get("quality"),
            max_segments=int(create.get("max_segments", 256)),
            decode=create.get("decode"),
        )
        cs.segments = [Segment(**s) for s in raw["segments"]]
        cs.next_seq, cs.next_group, cs.forgotten = raw["next_seq"], raw["next_group"], raw["forgotten"]
        if budget != cs.budget:  # a new budget applies at once: fade (never sharpen) to fit it
            cs.budget = budget
            with cs._lock:
                cs._replan()
                cs.save_manifest()
        return cs

    # ---- writes ------------------------------------------------------------------------------
    def add(self, text: str) -> list[Segment]:
        """Render ``text``, store its pages as the newest segments, re-plan every rung."""
        pages = self.renderer.render(text)
        if len(pages) > self.max_segments:
            # Refused before anything is stored or encoded (each page would be encoded once).
            raise PermanentError(
                f"context {self.name!r}: the text fills {len(pages)} pages, more than the "
                f"{self.max_segments} segments a context keeps; send it in smaller parts",
                reason="context_full",
            )
        with self._lock:
            group = self.next_group
            self.next_group += 1
            new = []
            for p in pages:
                img = raster.fit_image(p.image, self.limits, "context page")
                png = raster.png_bytes(img)
                seg = Segment(self.next_seq, 0, len(p.text), time.time(), group, costs=self.page_costs(img))
                self.next_seq += 1
                self.store.put(self._page_key(seg.seq), png, "image/png")
                self.segments.append(seg)
                new.append(seg)
            self._replan(fresh={s.seq for s in new})
            for seg in self.segments[: max(0, len(self.segments) - self.max_segments)]:
                self._forget(seg)  # past the cap the oldest go first, as under the budget
            self.segments = self.segments[-self.max_segments :]
            self.save_manifest()
            log.info(
                "context %s: +%d segment(s), %d kept, %d/%d tokens",
                self.name,
                len(new),
                len(self.segments),
                self.used_tokens(),
                self.budget,
            )
            kept = {s.seq for s in self.segments}
            return [s for s in new if s.seq in kept]

    def page_costs(self, img: Image.Image) -> list[int]:
        """Decoder placeholders ``img`` costs on each rung."""
        if not self.lines:
            return list(self.costs)
        return [page_tokens(m, img.size, img)[0] for m in self.ladder]

    def _replan(self, fresh: frozenset[int] | set[int] = frozenset()) -> None:
        newest_first = self.segments[::-1]
        caps = [s.rung for s in newest_first]
        rows = [s.costs or self.costs for s in newest_first]
        levels = plan_levels(
            rows, len(caps), self.budget, caps, self.quality, self.half_life, self.keep_sharp
        )
        assert plan_cost(rows, levels) <= self.budget  # planner contract
        drop = len(self.ladder)
        for seg, rung in zip(newest_first, levels, strict=True):
            if rung == seg.rung and seg.seq not in fresh:
                continue
            old_mode = seg.mode
            if rung == drop:
                self._forget(seg)
                continue
            seg.rung = rung
            self._encode(seg)
            if old_mode and old_mode != seg.mode:
                self._delete(self._tok_key(seg.seq, old_mode))
        self.segments = [s for s in self.segments if s.rung < drop]

    def _encode(self, seg: Segment) -> None:
        mode = self.ladder[seg.rung]
        img = Image.open(io.BytesIO(self.store.get(self._page_key(seg.seq)))).convert("RGB")
        vt = self.model.encode(img, mode)
        want = (seg.costs or self.costs)[seg.rung]
        if vt.n_placeholders != want:
            raise RuntimeError(
                f"model laid out {vt.n_placeholders} tokens for mode {mode.name}, budget counts {want}"
            )
        self.tiers.put(self._tok_key(seg.seq, mode.name), vt.to_bytes())
        seg.mode, seg.tokens = mode.name, vt.n_placeholders

    def _forget(self, seg: Segment) -> None:
        if seg.mode:
            self._delete(self._tok_key(seg.seq, seg.mode))
        self.store.delete(self._page_key(seg.seq))
        seg.rung, seg.mode, seg.tokens = len(self.ladder), "", 0
        self.forgotten += 1

    def _delete(self, key: str) -> None:
        self.tiers.delete(key)

    # ---- reads -------------------------------------------------------------------------------
    def used_tokens(self) -> int:
        return sum(s.tokens for s in self.segments)

    def _blobs(self) -> list[tuple[Segment, bytes]]:
        """Kept segments oldest first with their serialized tokens (hot cache, else durable store)."""
        with self._lock:
            segs = list(self.segments)
        out = []
        for seg in segs:
            key = self._tok_key(seg.seq, seg.mode)
            blob = self.tiers.get(key)
            if blob is None:
                raise NotFound(f"context {self.name!r}: tokens {key} are in neither the cache nor the store")
            out.append((seg, blob))
        return out

    def read_tokens(self) -> list[tuple[Segment, VisionTokens]]:
        """Kept segments oldest first with their vision tokens (hot cache, else durable store)."""
        return [(seg, VisionTokens.from_bytes(blob)) for seg, blob in self._blobs()]

    def prefix_tokens(self) -> list[VisionTokens]:
        """The kept context as one multi-image decoder prefix, oldest first."""
        return [vt for _, vt in self.read_tokens()]

    def prefix_prompt(self, question: str = "Free OCR.", n_images: int | None = None) -> str:
        """A raw prompt with one ``<image>`` per kept segment, then ``question``; pass it with
        ``prefix_tokens()`` to ``OcrModel.decode([tokens], prompt=...)``."""
        n = len(self.segments) if n_images is None else n_images
        return "<image>\n" * n + question

    def read_text(self, max_new_tokens: int | None = None, batch: int = 8) -> list[ReadSegment]:
        """Each kept segment read back through the decoder (free OCR), oldest first: the decoder
        service's n-gram rule and guard, down its temperature rungs (a mode rung would re-encode
        past the budget, so it is not run); ``max_new_tokens`` None = the settings' budget."""
        settings = self.decode_settings
        if max_new_tokens is not None:
            settings = dataclasses.replace(
                settings, guard=dataclasses.replace(settings.guard, max_new_tokens=max_new_tokens)
            )
        rungs = [r for r in settings.ladder if r.mode is None] or [Rung()]

        def decode(_i: int, rung: Rung, prompt: str, blobs: list[bytes]) -> list:
            return self.model.decode(
                [VisionTokens.from_bytes(b) for b in blobs],
                prompt=prompt,
                max_new_tokens=settings.max_new_tokens,
                temperature=rung.temperature,
                ngram=settings.ngram,
                seed=sampling_seed(blobs, prompt, rung.temperature),
            )

        out = []
        pairs = self._blobs()
        for i in range(0, len(pairs), batch):
            chunk = pairs[i : i + batch]
            reads = [_Read("free_ocr", blob=blob) for _, blob in chunk]
            read_down_ladder(reads, settings, decode, lambda r, _rung: r.blob, rungs=rungs)  # type: ignore[attr-defined]
            for (seg, _), r in zip(chunk, reads, strict=True):
                assert r.best is not None
                outcome = "ok" if r.done else r.attempts[0]["outcome"]  # best = the first read then
                text = to_markdown(r.best.text, self.page_size, self.page_size).text
                out.append(ReadSegment(seg, text, r.best.stopped, outcome, r.attempts))
        return out

    def mean_costs(self) -> list[int]:
        """Per rung, the mean cost of the kept pages (a line reader's pages differ)."""
        rows = [s.costs for s in self.segments if s.costs]
        if not rows:
            return [0] * len(self.ladder)
        return [round(sum(r[i] for r in rows) / len(rows)) for i in range(len(self.ladder))]

    def stats(self) -> dict:
        with self._lock:
            per_mode = {m.name: sum(1 for s in self.segments if s.mode == m.name) for m in self.ladder}
            return {
                "name": self.name,
                "budget_tokens": self.budget,
                "used_tokens": self.used_tokens(),
                "segments": len(self.segments),
                "forgotten": self.forgotten,
                "page_size": self.page_size,
                "ladder": [
                    {"mode": m.name, "tokens": c}
                    for m, c in zip(self.ladder, self.costs or self.mean_costs(), strict=True)
                ],
                "per_mode": per_mode,
                "segments_detail": [asdict(s) for s in self.segments],
            }
