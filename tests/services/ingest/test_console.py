"""The web console in a real headless Chromium (the Debian ``chromium`` package, driven by
Playwright) against ``ocrstream serve``'s embedded server with the shipped model: upload a bundled
sample PDF, see its page image and text, download md/json, re-decode with the grounding prompt
(cache hit, no encoder call) and see the boxes drawn over the page, checked on screenshots.

The shipped model was never trained on grounding (its model card says so), so for grounding
prompts the model is wrapped: its own reading of the page with one grounding block put in front,
at a box drawn at random per run. The test then knows where the box must appear on the screen.
Screenshots go to the test's tmp folder, or to ``$OCRSTREAM_TEST_SHOTS`` to keep them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ocrstream.config import DecoderConfig
from ocrstream.messages import PageEncoded, topic
from ocrstream.model.tokenizer import is_grounding_prompt
from ocrstream.pipeline.runner import Pipeline
from ocrstream.pipeline.server import EmbeddedServer
from tests.documents import make_pdf, random_words
from tests.tiny import tiny_ocr_model

SAMPLES = Path(__file__).resolve().parents[3] / "ocrstream" / "assets" / "samples"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
BOX_RGB = (255, 0, 255)  # console.js BOX_COLOUR
WAIT_MS = 600_000  # the shipped model reads a page in seconds to minutes on a busy CPU


def _missing(reason: str) -> None:
    (pytest.fail if IN_CI else pytest.skip)(reason)


class GroundingEcho:
    """The real model, except that a grounding prompt is answered with one grounding block at
    ``box`` (0-999 grid) followed by the model's own free-OCR reading of the page."""

    def __init__(self, model, box: tuple[int, int, int, int]) -> None:  # noqa: ANN001
        self._model, self.box = model, box

    def __getattr__(self, name: str):  # noqa: ANN204 - everything else is the model's
        return getattr(self._model, name)

    def decode(self, vision, prompt: str = "free_ocr", **kw):  # noqa: ANN001, ANN201
        if not is_grounding_prompt(prompt):
            return self._model.decode(vision, prompt=prompt, **kw)
        tag = "<|ref|>text<|/ref|><|det|>[[{}, {}, {}, {}]]<|/det|>\n".format(*self.box)
        return [
            dataclasses.replace(r, text=tag + r.text)
            for r in self._model.decode(vision, prompt="free_ocr", **kw)
        ]


@pytest.fixture(scope="module")
def browser():
    exe = os.environ.get("OCRSTREAM_TEST_CHROMIUM") or shutil.which("chromium")
    if not exe:
        _missing("no chromium on PATH (bash scripts/install_system.sh chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (the dev extra has it)")
    with sync_playwright() as p:
        # --no-sandbox: the tests run as root in CI, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    from ocrstream.model.runtime import SHIPPED_MODEL_DIR, OcrModel

    if not (SHIPPED_MODEL_DIR / "config.json").exists():
        _missing(f"the shipped model is not in {SHIPPED_MODEL_DIR}")
    rng = random.Random(os.urandom(8))
    x1, y1 = rng.randint(60, 400), rng.randint(60, 450)
    box = (x1, y1, x1 + rng.randint(200, 500), y1 + rng.randint(150, 450))
    model = GroundingEcho(OcrModel.load(), box)
    pipe = Pipeline.embedded(
        tmp_path_factory.mktemp("console") / "store",
        model,
        decoder_cfg=DecoderConfig(ladder="t=0.0"),
        runner="threads",
    )
    server = EmbeddedServer(pipe, port=0).start()
    server.wait_started()
    yield server, box
    server.stop()


def box_pixels(png: bytes) -> list[tuple[int, int]]:
    img = Image.open(io.BytesIO(png)).convert("RGB")
    px = img.load()
    return [
        (x, y)
        for y in range(img.height)
        for x in range(img.width)
        if px[x, y][0] > 200 and px[x, y][1] < 80 and px[x, y][2] > 200
    ]


def dark_share(png: bytes) -> float:
    img = Image.open(io.BytesIO(png)).convert("L")
    hist = img.histogram()
    return sum(hist[:128]) / (img.width * img.height)


def test_upload_view_download_redecode_and_boxes(console, browser, tmp_path):
    server, box = console
    pdf = SAMPLES / "apache-terms.pdf"
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    tmp_path = Path(os.environ.get("OCRSTREAM_TEST_SHOTS", tmp_path))
    tmp_path.mkdir(parents=True, exist_ok=True)
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    assert page.title() == "ocrstream console"
    assert page.locator("#prompt option").all_inner_texts() == ["free_ocr", "markdown", "grounding"]

    page.set_input_files("#file", str(pdf))
    page.select_option("#prompt", "free_ocr")
    page.click("#submit")
    page.wait_for_selector("#status[data-done='1']", timeout=WAIT_MS)
    page.screenshot(path=str(tmp_path / "1-uploaded.png"), full_page=True)

    status = page.inner_text("#status")
    assert "apache-terms.pdf" in status and "completed" in status and "1/1 pages" in status
    assert page.eval_on_selector("#bar", "b => [b.value, b.max]") == [1, 1]
    job_id = page.evaluate("state.job.job_id")
    result = httpx.get(f"{server.url}/v1/jobs/{job_id}/result", params={"format": "json"}, timeout=30).json()
    (res_page,) = result["pages"]
    card = page.locator(".page[data-page='1']")
    shown = card.locator("pre.markdown").text_content()
    assert shown.strip() and shown == res_page["text"]
    assert f"cache hit {'yes' if res_page['cache_hit'] else 'no'}" in card.locator(".meta").inner_text()
    image = card.locator(".image")
    image_png = image.screenshot(path=str(tmp_path / "2-page-image.png"))
    assert 0.002 < dark_share(image_png) < 0.5  # the page's text is on screen, not a blank box

    # downloads: the job's markdown and JSON, as the API serves them
    for sel, fmt in (("#dl-md", "markdown"), ("#dl-json", "json")):
        with page.expect_download() as dl:
            page.click(sel)
        body = Path(dl.value.path()).read_bytes()
        api = httpx.get(f"{server.url}/v1/jobs/{job_id}/result", params={"format": fmt}, timeout=30).content
        assert (
            body == api
            and dl.value.suggested_filename == f"apache-terms.{'md' if fmt == 'markdown' else 'json'}"
        )
    assert json.loads(body)["pages"][0]["text"] == shown

    # no boxes for free OCR, toggle or not
    page.check("#boxes")
    assert not box_pixels(image.screenshot())
    page.uncheck("#boxes")

    # re-decode with grounding: tokens from the cache, the encoder not called
    calls_before = server.pipe.encoder.encode_calls
    card.locator(".rd-prompt").select_option("grounding")
    card.locator(".rd-go").click()
    page.wait_for_selector(".page[data-page='1'] .rd-note[data-cache-hit='true']", timeout=WAIT_MS)
    page.wait_for_selector("#status[data-done='1']", timeout=WAIT_MS)
    assert server.pipe.encoder.encode_calls == calls_before
    card = page.locator(".page[data-page='1']")
    note = card.locator(".rd-note")
    assert "re-decoded with grounding: cache hit, no encoder call" in note.inner_text()
    assert note.get_attribute("data-encode-calls") == "0"
    new_job = page.evaluate("state.job.job_id")
    assert new_job != job_id
    (gpage,) = httpx.get(
        f"{server.url}/v1/jobs/{new_job}/result", params={"format": "json"}, timeout=30
    ).json()["pages"]
    assert gpage["cache_hit"] and gpage["prompt"] == "grounding" and len(gpage["boxes"]) == 1
    assert card.locator("pre.markdown").text_content() == gpage["text"]

    image = card.locator(".image")
    page.screenshot(path=str(tmp_path / "3-redecoded.png"), full_page=True)
    assert not box_pixels(image.screenshot()), "boxes drawn while the toggle is off"
    page.check("#boxes")
    on = image.screenshot(path=str(tmp_path / "4-boxes-on.png"))
    page.screenshot(path=str(tmp_path / "5-boxes-on-full.png"), full_page=True)
    magenta = box_pixels(on)
    w, h = Image.open(io.BytesIO(on)).size
    # Where the box must be on screen: the 0-999 grid scaled to the displayed image.
    x1, y1, x2, y2 = (box[0] * w / 999, box[1] * h / 999, box[2] * w / 999, box[3] * h / 999)
    assert magenta, "no box drawn with the toggle on"
    tol = 5
    # every box-coloured pixel is on the rectangle's outline or its label just above it
    assert all(x1 - tol <= x <= x2 + tol and y1 - 20 <= y <= y2 + tol for x, y in magenta)
    for name, on_edge, length in (
        ("left", lambda x, y: abs(x - x1) <= tol and y1 < y < y2, y2 - y1),
        ("right", lambda x, y: abs(x - x2) <= tol and y1 < y < y2, y2 - y1),
        ("top", lambda x, y: abs(y - y1) <= tol and x1 < x < x2, x2 - x1),
        ("bottom", lambda x, y: abs(y - y2) <= tol and x1 < x < x2, x2 - x1),
    ):
        rows = {y if name in ("left", "right") else x for x, y in magenta if on_edge(x, y)}
        assert len(rows) > 0.9 * (length - 2), (
            f"{name} edge of the box not drawn ({len(rows)} of {length:.0f})"
        )
    page.uncheck("#boxes")
    assert not box_pixels(image.screenshot(path=str(tmp_path / "6-boxes-off.png")))
    page.close()


def test_console_endpoints_need_the_api_key(tmp_path):
    model = tiny_ocr_model(int.from_bytes(os.urandom(4), "little"))
    env = {"OCRSTREAM_INGEST_DEFAULT_MODE": "tiny"}
    pipe = Pipeline.embedded(
        tmp_path / "store", model, env=env, decoder_cfg=DecoderConfig(max_new_tokens=8), runner="threads"
    )
    key = os.urandom(8).hex()
    server = EmbeddedServer(pipe, port=0, api_keys=(key,)).start()
    try:
        server.wait_started()
        assert httpx.get(server.url + "/", timeout=30).status_code == 200  # the page itself holds no data
        assert httpx.get(server.url + "/console/static/console.js", timeout=30).status_code == 200
        assert httpx.get(server.url + "/v1/console/info", timeout=30).status_code == 401
        sub = pipe.ingestor.submit(make_pdf(["a b c", "d e f"]), "two.pdf")
        pipe.ingestor.wait(sub.job_id, timeout_s=300)
        h = {"X-API-Key": key}
        got = httpx.get(f"{server.url}/v1/console/jobs/{sub.job_id}", headers=h, timeout=30).json()
        assert [p["page"] for p in got["pages"]] == [1, 2] and got["job"]["pages_done"] == 2
        only2 = httpx.get(
            f"{server.url}/v1/console/jobs/{sub.job_id}?exclude=1", headers=h, timeout=30
        ).json()
        assert [p["page"] for p in only2["pages"]] == [2]
        img = httpx.get(f"{server.url}/v1/console/jobs/{sub.job_id}/pages/2/image", headers=h, timeout=30)
        assert img.headers["content-type"] == "image/png" and Image.open(io.BytesIO(img.content)).width > 0
        assert (
            httpx.get(
                f"{server.url}/v1/console/jobs/{sub.job_id}/pages/3/image", headers=h, timeout=30
            ).status_code
            == 404
        )
        bad = httpx.get(f"{server.url}/v1/console/jobs/{sub.job_id}?exclude=x", headers=h, timeout=30)
        assert bad.status_code == 400
        calls = httpx.get(f"{server.url}/v1/console/info", headers=h, timeout=30).json()["encode_calls"]
        assert calls == pipe.encoder.encode_calls >= 2  # the in-process encoder's own counter
    finally:
        server.stop()


def test_redecode_tells_the_decoder_the_page_size(tmp_path, rng):
    """Grounding boxes of a re-decode are scaled to the page image (the console draws them over it),
    not to the 0-999 grid: the re-decode's records carry each page's size, read from its PNG."""
    model = tiny_ocr_model(int.from_bytes(os.urandom(4), "little"))
    env = {"OCRSTREAM_INGEST_DEFAULT_MODE": "tiny"}
    pipe = Pipeline.embedded(tmp_path / "store", model, env=env, decoder_cfg=DecoderConfig(max_new_tokens=8))
    path = tmp_path / "doc.pdf"
    path.write_bytes(make_pdf([random_words(rng, 2) for _ in range(2)]))
    (first,) = pipe.run([path], tmp_path / "out", prompt="free_ocr")
    sub = pipe.redecode(first["job_id"], "grounding")
    records = [PageEncoded.from_bytes(r.value) for r in pipe.bus.records(topic(PageEncoded, pipe.prefix))]
    redecoded = sorted((m for m in records if m.job_id == sub.job_id), key=lambda m: m.page)
    assert [m.page for m in redecoded] == [1, 2]
    for m in redecoded:
        with Image.open(io.BytesIO(pipe.store.get(m.image_key))) as img:
            assert (m.width, m.height) == img.size and m.width > 0
