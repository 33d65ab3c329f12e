"""Text segments rendered to square page images the model can read back.

Pages look like the embedded model's training pages (``ocrstream.data.render``, level 3): one
left-aligned, word-wrapped column, a training font at 20 px per 256 px of page (8 lines, as in a
reflowed view), 1.35 line spacing, dark text on white. Text longer than a page continues on the next page, so every page
has the same size and therefore the same vision-token cost per mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

# Top of the level-3 training range (14-20 px at 256): the shipped model reads it much better than
# 16 px (validation segments, mode 256: precision 0.59 at 20 px vs 0.49 at 16 px), for 8 lines a
# page instead of 10.
FONT_PX_PER_256 = 20
LINE_SPACING = 1.35
MARGIN_FRAC = 0.06


@dataclass(frozen=True)
class RenderedPage:
    image: Image.Image
    text: str  # the text drawn on this page, one line per rendered line


def _font(px: int, face: str | None):  # noqa: ANN202 - PIL font
    try:
        from ocrstream.data.fonts import font_by_name, load_font, train_fonts

        f = font_by_name(face) if face else train_fonts()[0]
        return load_font(f.path, px)
    except (FileNotFoundError, KeyError, OSError, ImportError):
        return ImageFont.load_default(size=px)  # keeps the store usable without the font packages


class PageRenderer:
    def __init__(self, size: int = 256, font_px: int | None = None, face: str | None = None) -> None:
        if size < 32:
            raise ValueError(f"page size {size} too small to hold text")
        self.size = int(size)
        self.font_px = int(font_px or max(8, round(FONT_PX_PER_256 * size / 256)))
        self.font = _font(self.font_px, face)
        self.margin = int(MARGIN_FRAC * size)
        self.line_h = int(round(self.font_px * LINE_SPACING))
        self.lines_per_page = max(1, (self.size - 2 * self.margin) // self.line_h)

    def wrap(self, text: str) -> list[str]:
        width = self.size - 2 * self.margin
        lines: list[str] = []
        for para in text.splitlines() or [""]:
            cur = ""
            for word in para.split():
                cand = f"{cur} {word}" if cur else word
                if self.font.getlength(cand) <= width:
                    cur = cand
                    continue
                if cur:
                    lines.append(cur)
                cur = word
                while self.font.getlength(cur) > width and len(cur) > 1:  # hard-break a long word
                    k = len(cur) - 1
                    while k > 1 and self.font.getlength(cur[:k]) > width:
                        k -= 1
                    lines.append(cur[:k])
                    cur = cur[k:]
            if cur:
                lines.append(cur)
        return lines

    def render(self, text: str) -> list[RenderedPage]:
        """One or more pages holding all of ``text`` (whitespace is normalised per line)."""
        lines = self.wrap(text)
        if not lines:
            raise ValueError("cannot render an empty text segment")
        pages = []
        for start in range(0, len(lines), self.lines_per_page):
            chunk = lines[start : start + self.lines_per_page]
            img = Image.new("RGB", (self.size, self.size), (255, 255, 255))
            draw = ImageDraw.Draw(img)
            for k, ln in enumerate(chunk):
                draw.text((self.margin, self.margin + k * self.line_h), ln, font=self.font, fill=(20, 20, 20))
            pages.append(RenderedPage(img, "\n".join(chunk)))
        return pages

    @property
    def chars_per_page(self) -> int:
        """Rough capacity, for sizing test segments."""
        return int(self.lines_per_page * (self.size - 2 * self.margin) / (0.5 * self.font_px))
