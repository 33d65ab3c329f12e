"""Bundled sample PDFs: made with reportlab from text never used in training.

The text is from licence files reserved by ``corpus.SAMPLE_SOURCES`` (excluded from every split).
Each sample is written as ``<name>.pdf`` beside ``<name>.txt`` (the exact text drawn, one line per
drawn line). Regenerate with ``ocrstream data samples`` or ``python -m ocrstream.data.samples``;
output is byte-identical across runs (reportlab invariant mode, fixed fonts and text).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from ocrstream.data.corpus import LICENSE_DIR, clean_paragraph
from ocrstream.data.fonts import font_by_name

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"


@dataclass(frozen=True)
class SampleSpec:
    name: str
    licence: str  # file in /usr/share/common-licenses (a reserved sample source)
    font: str  # training font face (the text, not the font, is unseen)
    font_pt: float
    title: str
    first_paragraph: int
    paragraphs: int


SAMPLES = (
    SampleSpec("mpl-notice", "MPL-2.0", "DejaVuSans", 12, "Mozilla Public License", 1, 3),
    SampleSpec("apache-terms", "Apache-2.0", "LiberationSerif", 13, "Apache License Terms", 3, 3),
    SampleSpec("apache-definitions", "Apache-2.0", "LiberationSans", 14, "Definitions", 8, 2),
)


def _paragraphs(spec: SampleSpec) -> list[str]:
    import re

    text = (LICENSE_DIR / spec.licence).read_text(encoding="utf-8", errors="replace")
    paras = [clean_paragraph(b) for b in re.split(r"\n\s*\n", text)]
    paras = [p for p in paras if p]
    if len(paras) < spec.first_paragraph + spec.paragraphs:
        raise ValueError(f"{spec.licence}: only {len(paras)} usable paragraphs")
    return paras[spec.first_paragraph : spec.first_paragraph + spec.paragraphs]


def make_sample(spec: SampleSpec, out_dir: Path) -> tuple[Path, Path]:
    from reportlab import rl_config
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    rl_config.invariant = 1  # no timestamps / random ids: byte-identical output
    face = font_by_name(spec.font)
    pdfmetrics.registerFont(TTFont(spec.font, str(face.path)))
    out_dir.mkdir(parents=True, exist_ok=True)
    pdf_path = out_dir / f"{spec.name}.pdf"
    txt_path = out_dir / f"{spec.name}.txt"
    width, height = A4
    margin = 72.0
    c = canvas.Canvas(str(pdf_path), pagesize=A4, invariant=1)
    c.setTitle(spec.title)
    c.setAuthor("ocrstream")
    lines_out: list[str] = []
    y = height - margin
    title_pt = spec.font_pt * 1.5
    c.setFont(spec.font, title_pt)
    c.drawString(margin, y - title_pt, spec.title)
    lines_out.append(spec.title)
    y -= title_pt * 2.2
    c.setFont(spec.font, spec.font_pt)
    lead = spec.font_pt * 1.4
    for para in _paragraphs(spec):
        line = ""
        for w in para.split():
            cand = f"{line} {w}" if line else w
            if pdfmetrics.stringWidth(cand, spec.font, spec.font_pt) <= width - 2 * margin:
                line = cand
                continue
            c.drawString(margin, y - spec.font_pt, line)
            lines_out.append(line)
            y -= lead
            line = w
        if line:
            c.drawString(margin, y - spec.font_pt, line)
            lines_out.append(line)
            y -= lead
        y -= lead * 0.6
        if y < margin + lead:
            break
    c.showPage()
    c.save()
    txt_path.write_text("\n".join(lines_out) + "\n")
    return pdf_path, txt_path


def make_samples(out_dir: Path = SAMPLES_DIR) -> list[Path]:
    out = []
    for spec in SAMPLES:
        pdf, _ = make_sample(spec, out_dir)
        out.append(pdf)
        log.info("sample %s", pdf)
    return out


def sample_sources(out_dir: Path = SAMPLES_DIR) -> dict[str, str]:
    """Bundled sample name -> source text (for CER checks of the pipeline)."""
    return {p.stem: p.read_text() for p in sorted(out_dir.glob("*.txt"))}


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO)
    make_samples(Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLES_DIR)
