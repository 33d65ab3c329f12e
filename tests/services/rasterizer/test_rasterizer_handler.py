"""Rasterizer: page images (RGB), text layers, one message per page; bad inputs dead-lettered."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from reportlab.lib.pagesizes import A6

from ocrstream import layout
from ocrstream.config import WorkerConfig
from ocrstream.messages import DeadLetter, DocumentCompleted, DocumentSubmitted, PageRasterized, topic
from ocrstream.raster import Limits
from ocrstream.services.ingest.handler import Ingestor
from ocrstream.services.rasterizer.handler import RasterizerHandler
from ocrstream.services.runtime import Worker, publish_messages
from tests.documents import empty_pdf, make_pdf, make_tiff, random_words


def _setup(bb, limits=None):
    producer = bb.bus.producer()
    ing = Ingestor(bb.store, lambda m, s: publish_messages(producer, "t.", m, s), bb.telemetry)
    cfg = WorkerConfig(max_wait_ms=0, metrics_port=0, backoff_s=0.01)
    w = Worker(RasterizerHandler(bb.store, bb.telemetry, limits or Limits()), bb.bus, bb.telemetry, cfg, "t.")
    return ing, w


def _pages(bb):
    return [
        PageRasterized.from_bytes(r.value, r.headers) for r in bb.bus.records(topic(PageRasterized, "t."))
    ]


def test_pdf_pages_rgb_and_text_layer(backbone, rng):
    texts = [random_words(rng, 3) for _ in range(rng.randint(2, 4))]
    ing, w = _setup(backbone)
    sub = ing.submit(make_pdf(texts, red_box=True), "doc.pdf")
    assert w.run_once(0) == 1
    pages = _pages(backbone)
    assert [p.page for p in pages] == list(range(1, len(texts) + 1))
    assert all(p.n_pages == len(texts) and p.job_id == sub.job_id for p in pages)
    for p, text in zip(pages, texts, strict=True):
        img = Image.open(io.BytesIO(backbone.store.get(p.image_key)))
        assert img.mode == "RGB"
        # 144 dpi = 2 px per point (PDFium rounds the bitmap size up)
        assert img.size == (p.width, p.height)
        assert all(abs(px - 2 * pt) <= 1 for px, pt in zip(img.size, A6, strict=True)), img.size
        # the red box sits at (10..70, 10..70) pt from the bottom-left: RGB, not BGR
        r, g, b = img.getpixel((80, img.size[1] - 80))
        assert r > 200 and g < 50 and b < 50, (r, g, b)
        assert backbone.store.get(p.text_layer_key).decode() == text
        assert p.image_hash == layout.sha256(backbone.store.get(p.image_key))
    assert ing.status(sub.job_id)["status"] == "rasterized"
    assert ing.status(sub.job_id)["n_pages"] == len(texts)


def test_multipage_tiff(backbone, rng):
    n = rng.randint(2, 4)
    ing, w = _setup(backbone)
    ing.submit(make_tiff(n), "scan.tiff")
    w.run_once(0)
    pages = _pages(backbone)
    assert len(pages) == n and all(p.text_layer_key == "" for p in pages)
    img = Image.open(io.BytesIO(backbone.store.get(pages[1].image_key)))
    assert img.getpixel((5, 5)) == (40, 100, 200)


BAD = {
    "corrupt": lambda: b"%PDF-1.4\n" + bytes(range(256)) * 4,
    "encrypted": lambda: make_pdf(["secret"], encrypt="pw"),
    "empty": empty_pdf,
    "unsupported": lambda: b"GIF89a not supported here",
    "oversized": lambda: make_pdf(["a", "b", "c"]),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_dead_lettered_and_job_failed(backbone, rng, kind):
    ing, w = _setup(backbone, Limits(max_pages=2))
    bad = ing.submit(BAD[kind](), f"bad-{kind}.pdf")
    good = ing.submit(make_pdf([random_words(rng, 2)]), "good.pdf")
    assert w.run_once(0) == 2
    dls = [DeadLetter.from_bytes(r.value, r.headers) for r in backbone.bus.records(topic(DeadLetter, "t."))]
    assert [(d.reason, d.job_id, d.stage) for d in dls] == [(kind, bad.job_id, "rasterize")]
    assert dls[0].detail  # a readable reason, e.g. "PDF has 3 pages, limit 2"
    st = ing.status(bad.job_id)
    assert st["status"] == "failed" and st["reason"].startswith(kind)
    done = [
        DocumentCompleted.from_bytes(r.value) for r in backbone.bus.records(topic(DocumentCompleted, "t."))
    ]
    assert [(d.job_id, d.status) for d in done] == [(bad.job_id, "failed")]
    # the pipeline kept serving the good document
    assert [p.job_id for p in _pages(backbone)] == [good.job_id]
    assert w.consumer.lag() == {(topic(DocumentSubmitted, "t."), 0): 0}  # all committed
