"""The encoder service's `auto` hook: pages of one job get their own modes through encode_pages."""

from __future__ import annotations

import io
import json

from ocrstream.backends.inprocess import InProcessEncoder
from ocrstream.backends.pages import encode_pages
from ocrstream.cache.memory import MemoryCache
from ocrstream.cache.tiers import TokenTiers
from ocrstream.compression.render import PageRenderer
from ocrstream.store.local import LocalStore
from ocrstream.telemetry import Telemetry, tracer_provider

from .test_auto_mode import toy_curve


def test_encode_pages_resolves_auto_per_page(model, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    model.config.to_json_file(ckpt / "config.json")
    toy_curve().save(ckpt / "compression_curve.json")
    monkeypatch.setenv("OCRSTREAM_CHECKPOINT_DIR", str(ckpt))  # the service setting the hook reads
    store = LocalStore(tmp_path / "store")
    r = PageRenderer(256)
    texts = ["Two words", "a long stretch of ordinary English prose fills the page " * 8]
    for n, text in enumerate(texts):
        buf = io.BytesIO()
        r.render(text)[0].image.save(buf, format="PNG")
        store.put(f"docs/d/auto/{n}.png", buf.getvalue(), "image/png")
    tel = Telemetry("test", tracer_provider("test"))
    out = encode_pages(
        InProcessEncoder(model),
        TokenTiers(MemoryCache(), store, tel),
        store,
        tel,
        [("docs/d/auto/0.png", "auto"), ("docs/d/auto/1.png", "auto"), ("docs/d/auto/1.png", "base")],
    )
    assert not any(isinstance(o, Exception) for o in out), out
    assert [o[3] for o in out] == [7, 21, 273]  # 128 (sparse), 256 (dense) placeholders; base stays base
    assert all("/auto/" in o[0] for o in out[:2])  # cached under the job's mode key


def test_embedded_pipeline_job_in_auto_mode(model, tmp_path, monkeypatch):
    """A two-page PDF submitted with mode "auto": each page encoded in its own mode, end to end."""
    from reportlab.lib.pagesizes import A6
    from reportlab.pdfgen import canvas

    from ocrstream.config import DecoderConfig
    from ocrstream.pipeline.runner import Pipeline

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    model.config.to_json_file(ckpt / "config.json")
    toy_curve().save(ckpt / "compression_curve.json")
    monkeypatch.setenv("OCRSTREAM_CHECKPOINT_DIR", str(ckpt))
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A6)
    c.setFont("Helvetica", 12)
    c.drawString(20, 250, "Hello")
    c.showPage()
    c.setFont("Helvetica", 7)
    for k in range(40):
        c.drawString(
            10, 400 - 9 * k, "dense page of small print, line after line of ordinary words " + str(k)
        )
    c.showPage()
    c.save()
    pdf = tmp_path / "mixed.pdf"
    pdf.write_bytes(buf.getvalue())
    pipe = Pipeline.embedded(
        tmp_path / "store", model, decoder_cfg=DecoderConfig(max_new_tokens=4, ladder="t=0.0")
    )
    (summary,) = pipe.run([pdf], tmp_path / "out", mode="auto")
    result = json.loads((tmp_path / "out" / "mixed.json").read_text())
    vision = [p["tokens"]["vision"] for p in result["pages"]]
    assert summary["n_pages"] == 2 and vision[0] < vision[1], vision  # sparse page: fewer tokens
    assert vision == [7, 21], vision  # 128 for one word, 256 for the dense page (toy curve)
