"""Synthetic text lines for the embedded line reader, cut the way pages are cut at run time.

Each sample is one line of text drawn with PIL in a random face and size, with parts of the lines
above and below it (as a crop of a real page shows), light degradation (grey levels, blur, noise,
JPEG, low resolution), then cut with the runtime's own ``ocrstream.model.lines.line_strip``: the
ink box grown to the face's typical band, padded, scaled to the strip height, with horizontal scale
jitter. Half the lines are corpus text, half random characters (glyphs without a language prior).

Everything is driven by a ``random.Random`` seeded from (seed, split, index), so line ``i`` of a
split is the same on every machine with the same fonts and corpus.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ocrstream.data.charset import CHARSET, DIGITS, EXTRA, LOWER, PUNCT, UPPER, normalize
from ocrstream.data.code import shell_line, smarten
from ocrstream.data.corpus import Paragraph
from ocrstream.data.fonts import FontFace, coverage, load_font
from ocrstream.data.render import seed_for
from ocrstream.model.lines import PAD, STRIP_HEIGHT, line_strip

FONT_PX = (11, 44)  # glyph size on the "page" before the strip is scaled: 8-pt at 100 dpi to 22-pt at 144
TYPICAL_PROBE = "Hdfgjklpqy"  # a prose line's tallest ascenders and deepest descenders
MIXED_FACES = 0.3  # lines with some words in another face
WIDE_GAP = 0.06  # lines with one wide gap between words (sometimes with a column rule in it)
BULLETS = ("\u2022", "-", "*", "\u2013", "1.", "2)", "a)", "(i)")


@dataclass
class LineSample:
    strip: Image.Image  # grayscale, STRIP_HEIGHT x w
    text: str  # normalised label (charset.normalize)
    font: str
    kind: str  # "corpus" | "random" | "code"
    squeeze: float  # horizontal compression rung (1.0 = the base rung), before jitter


class LineGenerator:
    """Lines from one corpus split in a set of faces."""

    def __init__(
        self,
        paragraphs: Sequence[Paragraph],
        fonts: Sequence[FontFace],
        split: str = "train",
        seed: int = 0,
        random_share: float = 0.5,
        squeezes: Sequence[tuple[float, float]] = ((1.0, 1.0),),
        height: int = STRIP_HEIGHT,
        degrade: bool = True,
        max_width: int | None = None,
        code_lines: Sequence[Paragraph] = (),
        code_share: float = 0.0,
        smart_quotes: float = 0.0,
        inline_code: float = 0.0,
    ) -> None:
        """``code_share`` of all lines are code (``code_lines`` or a made-up command line), set in
        a monospace face; of the prose lines, ``smart_quotes`` get typographic quotes and
        ``inline_code`` get one or two words replaced by a path, option or identifier in a
        monospace face (as manuals print them). At 0 (the defaults) a line draws exactly the
        random numbers it drew before these existed, so held-out splits stay the same lines."""
        if not paragraphs:
            raise ValueError(f"no paragraphs for split {split!r}")
        if not fonts:
            raise ValueError("no fonts")
        self.paragraphs = list(paragraphs)
        self.fonts = list(fonts)
        self.split = split
        self.seed = seed
        self.random_share = random_share
        self.squeezes = [s for s, _ in squeezes]
        self.squeeze_weights = [w for _, w in squeezes]
        self.height = height
        self.degrade = degrade
        self.max_width = max_width  # wider strips are drawn again (the encoder's widest strip)
        self.code_lines = list(code_lines)
        self.code_share = code_share
        self.smart_quotes = smart_quotes
        self.inline_code = inline_code
        self.mono = [f for f in self.fonts if "Mono" in f.name]

    def line(self, index: int) -> LineSample:
        """Deterministic line ``index`` of this split."""
        return self.sample(random.Random(seed_for(self.seed, f"lines:{self.split}", index)))

    def sample(self, rng: random.Random) -> LineSample:
        for _ in range(20):
            face = rng.choice(self.fonts)
            kind = "random" if rng.random() < self.random_share else "corpus"
            mono_words: set[int] = set()
            # (a draw only when code lines are on: with them off, a split's lines stay the same)
            if (
                kind == "corpus"
                and self.code_share > 0
                and rng.random() < self.code_share / max(1e-9, 1.0 - self.random_share)
            ):
                kind = "code"
                if self.mono and rng.random() < 0.8:
                    face = rng.choice(self.mono)
            if kind == "code":
                text = self._code_text(rng, coverage(face.path))
            else:
                text = self._text(rng, kind, coverage(face.path))
                if kind == "corpus" and (self.inline_code or self.smart_quotes):
                    text, mono_words = self._typeset(rng, text, coverage(face.path))
            if normalize(text):
                squeeze = rng.choices(self.squeezes, self.squeeze_weights)[0]
                strip = self._render(rng, face, text, squeeze, mono_words)
                if self.max_width is None or strip.width <= self.max_width:
                    return LineSample(strip, normalize(text), face.name, kind, squeeze)
        raise RuntimeError("could not draw a non-empty line")

    # ---- text --------------------------------------------------------------------------------
    def _length(self, rng: random.Random) -> int:
        r = rng.random()
        if r < 0.6:
            return rng.randint(30, 100)  # a full line of a page
        if r < 0.85:
            return rng.randint(8, 30)  # a paragraph's last line, a heading, a table cell row
        return rng.randint(1, 8)  # a page number, a bullet, a word

    def _text(self, rng: random.Random, kind: str, covered: frozenset[str]) -> str:
        n = self._length(rng)
        text = self._corpus_text(rng, n) if kind == "corpus" else self._random_text(rng, n)
        return "".join(c for c in text if c in covered and c in CHARSET)

    def _corpus_text(self, rng: random.Random, n: int) -> str:
        words = rng.choice(self.paragraphs).text.split()
        start = rng.randrange(len(words)) if rng.random() < 0.7 else 0
        out: list[str] = []
        for w in words[start:]:
            if out and len(" ".join(out)) + 1 + len(w) > n:
                break
            out.append(w)
        text = " ".join(out)[: max(n, 1)]
        r = rng.random()
        if r < 0.08:
            text = text.upper()
        elif r < 0.14:
            text = text.title()
        if rng.random() < 0.08:  # a list item
            text = f"{rng.choice(BULLETS)} {text}"
        return text

    def _code_text(self, rng: random.Random, covered: frozenset[str]) -> str:
        if self.code_lines and rng.random() < 0.5:
            text = rng.choice(self.code_lines).text
        else:
            text = shell_line(self.paragraphs, rng)
        return "".join(c for c in text if c in covered and c in CHARSET)

    def _typeset(self, rng: random.Random, text: str, covered: frozenset[str]) -> tuple[str, set[int]]:
        """A prose line as a manual prints it: typographic quotes, and code words (indices of the
        words to set in a monospace face)."""
        mono: set[int] = set()
        if self.inline_code and self.mono and rng.random() < self.inline_code:
            words = text.split(" ")
            for _ in range(rng.randint(1, 2)):
                i = rng.randrange(len(words))
                token = shell_line(self.paragraphs, rng).lstrip("$# ").split(" ")
                words[i] = "".join(c for c in rng.choice(token) if c in covered and c in CHARSET) or words[i]
                mono.add(i)
            text = " ".join(words)
        if rng.random() < self.smart_quotes:
            text = smarten(text)
        return text, mono

    def _random_text(self, rng: random.Random, n: int) -> str:
        pools = (LOWER, UPPER, DIGITS, PUNCT, EXTRA)
        weights = (0.45, 0.17, 0.15, 0.17, 0.06)
        words: list[str] = []
        while len(" ".join(words)) < n:
            k = rng.choice((1, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12))
            style = rng.random()
            if style < 0.5:  # one pool per word: words, numbers, runs of punctuation
                pool = rng.choices(pools, weights)[0]
                words.append("".join(rng.choice(pool) for _ in range(k)))
            else:  # mixed: identifiers, codes, paths
                words.append("".join(rng.choice(rng.choices(pools, weights)[0]) for _ in range(k)))
        return " ".join(words)[:n]

    # ---- rendering ---------------------------------------------------------------------------
    def _faces_for(self, rng: random.Random, face: FontFace, words: list[str]) -> list[FontFace]:
        """The face of each word: one face, or (as born-digital documents do) some words in
        another face (bold, italic, code)."""
        if len(words) < 2 or rng.random() >= MIXED_FACES:
            return [face] * len(words)
        out = []
        for w in words:
            alt = rng.choice(self.fonts) if rng.random() < 0.25 else face
            out.append(alt if set(w) <= coverage(alt.path) else face)
        return out

    def _render(
        self,
        rng: random.Random,
        face: FontFace,
        text: str,
        squeeze: float,
        mono_words: set[int] = frozenset(),
    ) -> Image.Image:
        px = rng.randint(*FONT_PX)
        font = load_font(face.path, px)
        words = text.split(" ")
        faces = self._faces_for(rng, face, words)
        if mono_words:  # code words in one monospace face that has their glyphs
            code_face = rng.choice(self.mono)
            for i in mono_words:
                if i < len(words) and set(words[i]) <= coverage(code_face.path):
                    faces[i] = code_face
        fonts = [load_font(f.path, px) for f in faces]
        # extra space at one word gap (a header's "title ..... page", a table's next cell)
        wide_gap = rng.randrange(1, len(words)) if len(words) > 1 and rng.random() < WIDE_GAP else -1
        _, ty0, _, ty1 = font.getbbox(TYPICAL_PROBE, anchor="ls")
        typical = (ty1 - ty0) * rng.uniform(0.9, 1.1)  # a column's median band is a noisy estimate
        margin = int(px * 1.5)
        pitch = px * rng.uniform(1.1, 1.7)
        advance = [f.getlength(w + " ") for w, f in zip(words, fonts, strict=True)]
        extra = rng.uniform(3, 15) * px if wide_gap > 0 else 0.0
        w = int(sum(advance) + extra) + 2 * margin
        h = int(3 * pitch + 2 * px)
        bg = rng.randint(185, 255)
        fg = rng.randint(0, max(0, bg - 110))
        img = Image.new("L", (w, h), bg)
        draw = ImageDraw.Draw(img)
        base = int(h / 2 + px * 0.3)  # baseline: every face of the line sits on it
        x = float(margin)
        boxes, gaps = [], []
        for i, (word, f) in enumerate(zip(words, fonts, strict=True)):
            if i == wide_gap:
                gaps.append(x + 0.5 * extra)
                x += extra
            if word:
                draw.text((x, base), word, font=f, fill=fg, anchor="ls")
                boxes.append(draw.textbbox((x, base), word, font=f, anchor="ls"))
            x += advance[i]
        bx0, by0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        bx1, by1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        for dy in (-pitch, pitch):  # neighbouring lines, whose ascenders/descenders a crop may catch
            if rng.random() < 0.6:
                other = self._corpus_text(rng, rng.randint(10, 100)) if rng.random() < 0.7 else "x" * 40
                draw.text((margin + rng.randint(-px, px), base + dy), other, font=font, fill=fg, anchor="ls")
        r = rng.random()
        if r < 0.04:  # underlined text (links, emphasis)
            y = base + max(1, px // 8)
            draw.line((bx0, y, bx1, y), fill=fg, width=max(1, px // 14))
        elif r < 0.12:  # a table or box rule above or below the line, inside the crop
            y = base + ty0 - 0.35 * typical if rng.random() < 0.5 else base + ty1 + 0.3 * typical
            draw.line((margin - px, y, w - margin + px, y), fill=fg, width=max(1, px // 12))
        if gaps and rng.random() < 0.5:  # a table's column rule in the wide gap
            gx = gaps[0]
            draw.line(
                (gx, base + ty0 - 0.4 * typical, gx, base + ty1 + 0.4 * typical),
                fill=fg,
                width=max(1, px // 12),
            )
        if self.degrade:
            img = _degrade(rng, img, px)
        jit = 0.06 * typical
        box = (
            bx0 + rng.uniform(-jit, jit),
            by0 + rng.uniform(-jit, jit),
            bx1 + rng.uniform(-jit, jit),
            by1 + rng.uniform(-jit, jit),
        )
        band = max(box[3] - box[1], typical)
        return line_strip(
            img,
            box,
            band,
            self.height,
            squeeze=squeeze * rng.uniform(0.87, 1.15),
            pad=PAD * rng.uniform(0.7, 1.4),
            bg=bg,
        )


def _degrade(rng: random.Random, img: Image.Image, px: int) -> Image.Image:
    if rng.random() < 0.25:  # rendered at a lower resolution, then upsampled
        f = rng.uniform(0.5, 0.9)
        small = img.resize(
            (max(1, int(img.width * f)), max(1, int(img.height * f))), Image.Resampling.BILINEAR
        )
        img = small.resize(img.size, Image.Resampling.BILINEAR)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.2, 0.9) * max(1.0, px / 24)))
    sigma = rng.uniform(0, 8)
    if sigma > 1:
        arr = np.asarray(img, dtype=np.float32)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, sigma, arr.shape)
        img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=rng.randint(30, 90))
        buf.seek(0)
        img = Image.open(buf).convert("L")
    return img
