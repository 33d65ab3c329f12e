"""Documents to RGB page images with limits: PDF through pypdfium2, PNG/JPEG/TIFF (multi-page)
through PIL. The one page path: the rasterizer service, ``ocrstream ocr`` (through the pipeline),
the evaluation and curve measurement, and the context API's rendered pages all make their page
images here (``fit_image``, ``png_bytes``), so every entry point hands the encoder the same pixels.

pypdfium2 renders BGR(A) by default; ``rev_byteorder=True`` gives RGB. Library errors are mapped
here to the permanent bad-input errors (corrupt, encrypted, empty, oversized, unsupported).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pypdfium2 as pdfium
from PIL import Image, ImageSequence, UnidentifiedImageError

from ocrstream.config import RasterizerConfig
from ocrstream.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    OversizedDocument,
    UnsupportedDocument,
)

_EMPTY_TREE = re.compile(rb"/Type\s*/Pages\b[^>]*?/Count\s+0\b|/Count\s+0\b[^>]*?/Type\s*/Pages\b")
_PAGE_OBJ = re.compile(rb"/Type\s*/Page\b(?!s)")

IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}


@dataclass(frozen=True)
class Limits:
    """Defaults = ``RasterizerConfig``'s (``from_config`` reads a configured one)."""

    dpi: int = 144
    max_pages: int = 500
    max_bytes: int = 64 * 1024 * 1024
    max_page_pixels: int = 40_000_000
    max_side: int = 2048

    @classmethod
    def from_config(cls, cfg: RasterizerConfig) -> Limits:
        return cls(cfg.dpi, cfg.max_pages, cfg.max_bytes, cfg.max_page_pixels, cfg.max_side)


@dataclass
class RasterPage:
    number: int  # 1-based
    image: Image.Image  # RGB
    text_layer: str  # "" for images and PDF pages without text


def sniff(data: bytes) -> str:
    if data[:1024].lstrip().startswith(b"%PDF") or b"%PDF-" in data[:1024]:
        return "pdf"
    for magic, kind in IMAGE_MAGIC.items():
        if data.startswith(magic):
            return kind
    raise UnsupportedDocument(f"not a PDF, PNG, JPEG or TIFF (first bytes {data[:8]!r})")


def count_and_check(data: bytes, limits: Limits) -> str:
    if not data:
        raise EmptyDocument("document has 0 bytes")
    if len(data) > limits.max_bytes:
        raise OversizedDocument(f"document has {len(data)} bytes, limit {limits.max_bytes}")
    return sniff(data)


def rasterize(data: bytes, limits: Limits) -> tuple[int, Iterator[RasterPage]]:
    """(page count, lazy page iterator). All size/page checks that can fail early run before the
    first page is rendered, so a bad document produces no page messages."""
    kind = count_and_check(data, limits)
    if kind == "pdf":
        return _pdf(data, limits)
    return _image(data, limits)


def _pdf(data: bytes, limits: Limits) -> tuple[int, Iterator[RasterPage]]:
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        # PDFium's error code is process-global and not reset on success, so it can be stale:
        # confirm each reading from the bytes themselves.
        code = getattr(exc, "err_code", None)
        if code in (pdfium.raw.FPDF_ERR_PASSWORD, pdfium.raw.FPDF_ERR_SECURITY) and b"/Encrypt" in data:
            raise EncryptedDocument(f"PDF is encrypted / password protected ({exc})") from exc
        if _EMPTY_TREE.search(data) and not _PAGE_OBJ.search(data):
            raise EmptyDocument(f"PDF has 0 pages ({exc})") from exc
        raise CorruptDocument(f"PDF cannot be parsed: {exc}") from exc
    n = len(pdf)
    if n == 0:
        pdf.close()
        raise EmptyDocument("PDF has 0 pages")
    if n > limits.max_pages:
        pdf.close()
        raise OversizedDocument(f"PDF has {n} pages, limit {limits.max_pages}")
    scale = limits.dpi / 72
    for i in range(n):
        w, h = pdf.get_page_size(i)
        px = int(w * scale) * int(h * scale)
        if px > limits.max_page_pixels:
            pdf.close()
            raise OversizedDocument(
                f"PDF page {i + 1} is {w:.0f}x{h:.0f} pt = {px} px at {limits.dpi} dpi, limit {limits.max_page_pixels}"
            )

    def pages() -> Iterator[RasterPage]:
        try:
            for i in range(n):
                page = pdf[i]
                try:
                    w, h = page.get_size()
                    s = min(scale, limits.max_side / max(w, h, 1))
                    bitmap = page.render(scale=s, rev_byteorder=True)
                    img = bitmap.to_pil()
                    if img.mode != "RGB":
                        img = img.convert("RGB")
                    tp = page.get_textpage()
                    text = tp.get_text_range().strip()
                    tp.close()
                except pdfium.PdfiumError as exc:
                    raise CorruptDocument(f"PDF page {i + 1} cannot be rendered: {exc}") from exc
                finally:
                    page.close()
                yield RasterPage(i + 1, img, text)
        finally:
            pdf.close()

    return n, pages()


def _image(data: bytes, limits: Limits) -> tuple[int, Iterator[RasterPage]]:
    try:
        img = Image.open(io.BytesIO(data))
        n = getattr(img, "n_frames", 1)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CorruptDocument(f"image cannot be parsed: {exc}") from exc
    if n == 0:
        raise EmptyDocument("image has 0 frames")
    if n > limits.max_pages:
        raise OversizedDocument(f"image has {n} pages, limit {limits.max_pages}")
    w, h = img.size
    if w * h > limits.max_page_pixels:
        raise OversizedDocument(f"image is {w}x{h} = {w * h} px, limit {limits.max_page_pixels}")
    if w == 0 or h == 0:
        raise EmptyDocument(f"image is {w}x{h}")

    def pages() -> Iterator[RasterPage]:
        try:
            for i, frame in enumerate(ImageSequence.Iterator(img)):
                yield RasterPage(i + 1, fit_image(frame, limits, f"image page {i + 1}"), "")
        except (OSError, ValueError, SyntaxError) as exc:
            raise CorruptDocument(f"image page cannot be decoded: {exc}") from exc

    return n, pages()


def fit_image(img: Image.Image, limits: Limits, what: str = "image") -> Image.Image:
    """An RGB copy with the long side at most ``limits.max_side`` (a page image as the encoder gets
    it); OversizedDocument past ``limits.max_page_pixels``."""
    if img.width * img.height > limits.max_page_pixels:
        raise OversizedDocument(f"{what} is {img.width}x{img.height}, limit {limits.max_page_pixels} px")
    rgb = img.convert("RGB")
    if max(rgb.size) > limits.max_side:
        rgb.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    return rgb


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # speed over size: PNG encoding dominates
    return buf.getvalue()
