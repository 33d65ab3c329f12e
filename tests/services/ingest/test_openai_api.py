"""The OpenAI-compatible endpoint through the official ``openai`` client against real servers:
``ocrstream serve``'s embedded server (the shipped model on a bundled sample, a tiny random model
for multi-page and error cases) and the ingest app over the real Kafka, Redis and S3.

The shipped model is still training, so no test knows its text: each compares what the endpoint
returns with what the embedded pipeline produces for the same page in a separate run.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pypdfium2 as pdfium
import pytest
import uvicorn
from PIL import Image

from ocrstream.config import DecoderConfig
from ocrstream.messages import DeadLetter, topic
from ocrstream.model.grounding import PAGE_SPLIT
from ocrstream.model.tokenizer import PROMPTS
from ocrstream.pipeline.runner import Pipeline
from ocrstream.pipeline.server import EmbeddedServer
from ocrstream.services.ingest.api import create_app
from ocrstream.services.ingest.openai_api import OpenAIOptions, TokenizerPromptTokens, prompt_for
from ocrstream.services.ingest.references import ReferencePolicy
from tests.documents import make_pdf, random_words
from tests.tiny import tiny_ocr_model

SAMPLES = Path(__file__).resolve().parents[3] / "ocrstream" / "assets" / "samples"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
GREEDY = DecoderConfig(ladder="t=0.0")  # one deterministic answer per page: runs are comparable
TINY_ENV = {"OCRSTREAM_INGEST_DEFAULT_MODE": "tiny", "OCRSTREAM_INGEST_MAX_BYTES": str(300_000)}
TINY_DEC = DecoderConfig(max_new_tokens=16, ladder="t=0.0;t=0.7")


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def client_for(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=900)


def image_message(url: str, text: str = "Free OCR.") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}],
        }
    ]


def file_message(data: bytes, name: str, text: str = "") -> list[dict]:
    parts: list[dict] = [
        {"type": "file", "file": {"file_data": data_url(data, "application/pdf"), "filename": name}}
    ]
    if text:
        parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def reference_pages(model, tmp: Path, path: Path, prompt: str = "") -> list[dict]:
    """The embedded pipeline's own page results for ``path`` (a separate store and run)."""
    pipe = Pipeline.embedded(tmp / "store", model, decoder_cfg=GREEDY)
    try:
        (summary,) = pipe.run([path], tmp / "out", prompt=prompt)
    finally:
        pipe.close()
    return json.loads(Path(summary["json"]).read_text())["pages"]


# ---- the shipped model on bundled samples --------------------------------------------------------
@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    from ocrstream.model.runtime import SHIPPED_MODEL_DIR, OcrModel

    if not (SHIPPED_MODEL_DIR / "config.json").exists():
        (pytest.fail if IN_CI else pytest.skip)(f"the shipped model is not in {SHIPPED_MODEL_DIR}")
    model = OcrModel.load()
    pipe = Pipeline.embedded(
        tmp_path_factory.mktemp("serve") / "store", model, decoder_cfg=GREEDY, runner="threads"
    )
    server = EmbeddedServer(pipe, port=0).start()
    server.wait_started()
    yield model, server
    server.stop()


def expected_prompt_tokens(model, prompt: str, pages: list[dict]) -> int:
    # The full prompt the model reads: BOS, the text around <image>, the image's vision tokens.
    return sum(len(model.tokenizer.build_input_ids(PROMPTS[prompt], [p["tokens"]["vision"]])) for p in pages)


def test_sample_pdf_non_streaming_equals_the_embedded_pipeline(shipped, tmp_path):
    model, server = shipped
    pdf = SAMPLES / "apache-definitions.pdf"
    client = client_for(server.url)
    assert "ocrstream-embedded" in [m.id for m in client.models.list()]
    resp = client.chat.completions.create(
        model="ocrstream-embedded", messages=file_message(pdf.read_bytes(), pdf.name, "Free OCR.")
    )
    ref = reference_pages(model, tmp_path, pdf)
    (page,) = ref
    content = resp.choices[0].message.content
    assert content.strip() and content == page["text"]
    assert resp.choices[0].finish_reason == "stop" and resp.object == "chat.completion"
    assert resp.usage.prompt_tokens == expected_prompt_tokens(model, "free_ocr", ref)
    assert resp.usage.completion_tokens == page["tokens"]["text"] > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_sample_page_image_streaming_equals_the_embedded_pipeline(shipped, tmp_path):
    model, server = shipped
    pdf = pdfium.PdfDocument(str(SAMPLES / "apache-terms.pdf"))
    img = pdf[0].render(scale=2.0).to_pil().convert("RGB")
    png = tmp_path / "apache-terms-page1.png"
    png.write_bytes(png_bytes(img))
    stream = client_for(server.url).chat.completions.create(
        model="ocrstream-embedded",
        messages=image_message(data_url(png.read_bytes(), "image/png")),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    ref = reference_pages(model, tmp_path, png)
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) == 1  # one chunk per page
    assert content_chunks[0].choices[0].delta.role == "assistant"
    text = content_chunks[0].choices[0].delta.content
    assert text.strip() and text == ref[0]["text"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    (usage_chunk,) = [c for c in chunks if c.usage is not None]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.prompt_tokens == expected_prompt_tokens(model, "free_ocr", ref)
    assert usage_chunk.usage.completion_tokens == ref[0]["tokens"]["text"]


# ---- a tiny random model: several pages, prompts, errors ---------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = tiny_ocr_model(int.from_bytes(os.urandom(4), "little"))
    pipe = Pipeline.embedded(
        tmp_path_factory.mktemp("tiny") / "store", model, env=TINY_ENV, decoder_cfg=TINY_DEC, runner="threads"
    )
    server = EmbeddedServer(pipe, port=0).start()
    server.wait_started()
    yield model, pipe, server
    server.stop()


def job_result(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/v1/jobs/{job_id}/result", params={"format": "json"}, timeout=30).json()


def check_pages(pages: list[dict], texts: list[str], streamed: list[str]) -> None:
    """Each page's answer is the pipeline's page text; where the random model fell back to the PDF
    text layer, that is the drawn words exactly."""
    assert [p["page"] for p in pages] == list(range(1, len(texts) + 1))
    assert streamed == [p["text"] for p in pages]
    for p, words in zip(pages, texts, strict=True):
        if p["method"] == "text_layer":
            assert p["text"] == words


def test_multi_page_pdf_streams_one_chunk_per_page(tiny, rng):
    model, _, server = tiny
    texts = [random_words(rng, 3) for _ in range(rng.randint(3, 5))]
    pdf = make_pdf(texts)
    stream = client_for(server.url).chat.completions.create(
        model="ocrstream-embedded",
        messages=file_message(pdf, "multi.pdf"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content is not None]
    assert len(content) == len(texts)
    streamed = [c.choices[0].delta.content for c in content]
    assert all(s.startswith(PAGE_SPLIT) for s in streamed[1:])
    job_id = content[0].model_extra["ocrstream"]["job_id"]
    assert [c.model_extra["ocrstream"]["page"] for c in content] == list(range(1, len(texts) + 1))
    pages = job_result(server.url, job_id)["pages"]
    check_pages(pages, texts, [streamed[0]] + [s[len(PAGE_SPLIT) :] for s in streamed[1:]])
    usage = chunks[-1].usage
    text_prompt = len(model.tokenizer.build_input_ids(PROMPTS["free_ocr"], [0]))
    assert usage.prompt_tokens == sum(p["tokens"]["vision"] + text_prompt for p in pages)
    assert usage.completion_tokens == sum(p["tokens"]["text"] for p in pages)

    # The same document again, not streamed: the finished job is reused, the answer identical.
    again = client_for(server.url).chat.completions.create(
        model="ocrstream-embedded", messages=file_message(pdf, "multi.pdf")
    )
    assert again.choices[0].message.content == "".join(streamed)
    assert again.model_extra["ocrstream"]["job_ids"] == [job_id]


def test_user_text_picks_the_prompt(tiny, rng):
    _, pipe, server = tiny
    client = client_for(server.url)
    raw = "<image>\nRead the text. " + random_words(rng, 2)
    for text, prompt in [
        ("", "free_ocr"),
        ("Please convert this page to Markdown", "markdown"),
        ("OCR with grounding boxes", "grounding"),
        (raw, raw),
    ]:
        pdf = make_pdf([random_words(rng, 2)])
        resp = client.chat.completions.create(
            model="ocrstream-embedded", messages=file_message(pdf, "p.pdf", text)
        )
        (job_id,) = resp.model_extra["ocrstream"]["job_ids"]
        assert resp.model_extra["ocrstream"]["prompt"] == prompt
        assert pipe.ingestor.jobs.get(job_id)["prompt"] == prompt
    assert prompt_for("Free OCR.") == "free_ocr" and prompt_for("identify") == "identify"


def dead_letters(pipe: Pipeline) -> list[DeadLetter]:
    return [
        DeadLetter.from_bytes(r.value, r.headers) for r in pipe.bus.records(topic(DeadLetter, pipe.prefix))
    ]


def error_of(exc: openai.APIStatusError) -> dict:
    err = exc.body if "message" in (exc.body or {}) else (exc.body or {}).get("error", {})
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def test_bad_requests_get_openai_error_bodies(tiny, rng):
    _, pipe, server = tiny
    client = client_for(server.url)
    pdf = make_pdf([random_words(rng, 2)])

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="ocrstream-embedded", messages=[{"role": "user", "content": "Free OCR of nothing"}]
        )
    assert error_of(e.value)["code"] == "no_image" and e.value.status_code == 400

    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model=f"gpt-{rng.randint(5, 99)}", messages=file_message(pdf, "a.pdf"))
    err = error_of(e.value)
    assert (err["code"], err["param"], err["type"]) == ("model_not_found", "model", "invalid_request_error")

    # An image past OCRSTREAM_INGEST_MAX_BYTES (300 kB here): noise does not compress.
    noise = Image.frombytes("RGB", (400, 400), os.urandom(400 * 400 * 3))
    big = png_bytes(noise)
    assert len(big) > 300_000
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model="ocrstream-embedded", messages=image_message(data_url(big, "image/png"))
        )
    assert e.value.status_code == 413 and error_of(e.value)["code"] == "image_too_large"
    assert error_of(e.value)["param"] == "messages[0].content[0]"

    # Too many pixels for the rasterizer, caught at the door from the header alone.
    wide = png_bytes(Image.new("L", (9000, 5000), 255))
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model="ocrstream-embedded", messages=image_message(data_url(wide, "image/png"))
        )
    assert e.value.status_code == 413 and "pixels" in error_of(e.value)["message"]

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="ocrstream-embedded", messages=image_message("data:image/png;base64,@@not-base64@@")
        )
    assert error_of(e.value)["code"] == "invalid_data_url"

    # A remote reference outside the (empty) allow-list: refused before anything is fetched.
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.chat.completions.create(
            model="ocrstream-embedded", messages=image_message("http://169.254.169.254/latest/meta-data")
        )
    assert error_of(e.value)["code"] == "reference_not_allowed"

    # Bad JSON cannot be sent through the client: a plain POST.
    r = httpx.post(
        f"{server.url}/v1/chat/completions", content=b'{"model": "ocrstream-embedded", ', timeout=30
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}

    # Each refusal is on the dead-letter topic too, as a refused upload is.
    refused = {d.reason for d in dead_letters(pipe) if d.original_topic == "http POST /v1/chat/completions"}
    codes = {"no_image", "model_not_found", "image_too_large", "invalid_data_url", "reference_not_allowed"}
    assert codes | {"invalid_json"} <= refused


def test_broken_pdf_is_a_4xx_and_a_dead_letter(tiny, rng):
    _, pipe, server = tiny
    broken = b"%PDF-1.7\n" + os.urandom(300)
    for stream in (False, True):
        with pytest.raises(openai.UnprocessableEntityError) as e:
            client_for(server.url).chat.completions.create(
                model="ocrstream-embedded", messages=file_message(broken, "broken.pdf"), stream=stream
            )
        assert error_of(e.value)["code"] == "corrupt"
    letters = [d for d in dead_letters(pipe) if d.reason == "corrupt"]
    # once, by the rasterizer that refused it; the endpoint does not record it a second time
    assert [d.stage for d in letters] == ["rasterize"]


def test_api_keys_as_bearer_tokens(tmp_path, rng):
    model = tiny_ocr_model(int.from_bytes(os.urandom(4), "little"))
    pipe = Pipeline.embedded(tmp_path / "store", model, env=TINY_ENV, decoder_cfg=TINY_DEC, runner="threads")
    key = base64.urlsafe_b64encode(os.urandom(12)).decode()
    server = EmbeddedServer(pipe, port=0, api_keys=(key,)).start()
    try:
        server.wait_started()
        with pytest.raises(openai.AuthenticationError) as e:
            client_for(server.url, key + "x").models.list()
        assert error_of(e.value)["code"] == "invalid_api_key"
        texts = [random_words(rng, 3)]
        resp = client_for(server.url, key).chat.completions.create(
            model="ocrstream-embedded", messages=file_message(make_pdf(texts), "k.pdf")
        )
        (job_id,) = resp.model_extra["ocrstream"]["job_ids"]
        pages = json.loads(pipe.ingestor.result(job_id, "json"))["pages"]
        check_pages(pages, texts, [resp.choices[0].message.content])
    finally:
        server.stop()
    with pytest.raises(ValueError, match="needs API keys"):
        EmbeddedServer(pipe, host="0.0.0.0", port=0)


# ---- the ingest service over Kafka, Redis and S3, with references ---------------------------------------
class _Uvicorn:
    """An ASGI app on a free 127.0.0.1 port in a thread (as the ingest main runs it)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Uvicorn:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class _Files(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status, headers, body = self.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.minio
def test_ingest_service_over_kafka_with_s3_and_http_references(
    dev_common, minio_endpoint, minio_bucket, minio_client, rng
):
    from ocrstream.bus.kafka import KafkaBus
    from ocrstream.config import EncoderConfig
    from ocrstream.pipeline.runner import Pipeline
    from ocrstream.services.wiring import build_cache
    from ocrstream.store.s3 import S3Store

    e, common = minio_endpoint, dev_common
    model = tiny_ocr_model(int.from_bytes(os.urandom(4), "little"))
    store = S3Store(e.endpoint, e.access_key, e.secret_key, minio_bucket)
    cluster = Pipeline(
        model,
        KafkaBus(common.kafka_bootstrap),
        store,
        build_cache(common, EncoderConfig()),
        common=common,
        runner="threads",
        env=TINY_ENV,
        decoder_cfg=TINY_DEC,
    ).start()
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{files.server_address[1]}"
    key = base64.urlsafe_b64encode(os.urandom(12)).decode()
    opts = OpenAIOptions(
        model_names=("deepseek-ocr",),
        prompt_tokens=TokenizerPromptTokens(tokenizer=model.tokenizer),
        references=ReferencePolicy(buckets=(minio_bucket,), http_prefixes=(f"{base}/scans",)),
        s3_client=store.client,
    )
    app = create_app(cluster.ingestor, cluster.telemetry["ingest"], (key,), openai=opts)
    try:
        with _Uvicorn(app) as api:
            client = client_for(api.url, key)
            assert [m.id for m in client.models.list()] == ["deepseek-ocr"]
            # s3:// in an allowed bucket
            texts = [random_words(rng, 3) for _ in range(2)]
            obj = f"inbox/{rng.randrange(10**9)}.pdf"
            pdf = make_pdf(texts)
            minio_client.put_object(minio_bucket, obj, io.BytesIO(pdf), len(pdf))
            resp = client.chat.completions.create(
                model="deepseek-ocr", messages=image_message(f"s3://{minio_bucket}/{obj}")
            )
            (job_id,) = resp.model_extra["ocrstream"]["job_ids"]
            pages = json.loads(cluster.ingestor.result(job_id, "json"))["pages"]
            check_pages(pages, texts, resp.choices[0].message.content.split(PAGE_SPLIT))

            # http(s) under the allowed prefix; a redirect out of it is refused
            words = [random_words(rng, 3)]
            _Files.routes = {
                "/scans/a.pdf": (200, {"Content-Type": "application/pdf"}, make_pdf(words)),
                "/scans/jump": (302, {"Location": f"{base}/private/b.pdf"}, b""),
                "/private/b.pdf": (200, {}, make_pdf(words)),
            }
            stream = client.chat.completions.create(
                model="deepseek-ocr", messages=image_message(f"{base}/scans/a.pdf"), stream=True
            )
            chunks = [c for c in stream if c.choices and c.choices[0].delta.content]
            job_id = chunks[0].model_extra["ocrstream"]["job_id"]
            pages = json.loads(cluster.ingestor.result(job_id, "json"))["pages"]
            check_pages(pages, words, [c.choices[0].delta.content for c in chunks])
            for uri in (f"{base}/scans/jump", f"{base}/private/b.pdf", f"s3://other-{minio_bucket}/x.pdf"):
                with pytest.raises(openai.PermissionDeniedError) as e:
                    client.chat.completions.create(model="deepseek-ocr", messages=image_message(uri))
                assert error_of(e.value)["code"] == "reference_not_allowed", uri
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(
                    model="deepseek-ocr", messages=image_message(f"s3://{minio_bucket}/inbox/missing.pdf")
                )
    finally:
        files.shutdown()
        cluster.stop()


def test_ocrstream_serve_command(tmp_path, tiny_checkpoint, rng):
    """The command itself: the embedded server on 127.0.0.1 (default port 8080), SIGTERM stops it;
    a port in use is a one-line error."""
    import signal
    import subprocess
    import sys

    from ocrstream.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.service) == ("127.0.0.1", 8080, None)

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    env = {**os.environ, "OCRSTREAM_INGEST_DEFAULT_MODE": "tiny", "OCRSTREAM_DECODER_MAX_NEW_TOKENS": "8"}
    cmd = [
        sys.executable,
        "-m",
        "ocrstream",
        "serve",
        "--port",
        str(port),
        "--checkpoint",
        str(tiny_checkpoint),
    ]
    log = (tmp_path / "serve.log").open("w")  # a file, not a pipe: an unread pipe would block its logging
    proc = subprocess.Popen(
        [*cmd, "--store", str(tmp_path / "store")], env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    try:
        line = proc.stdout.readline()
        assert f"serving on http://127.0.0.1:{port}" in line, (tmp_path / "serve.log").read_text()[-2000:]
        url = f"http://127.0.0.1:{port}"
        assert "ocrstream-embedded" in [m.id for m in client_for(url).models.list()]
        assert "ocrstream console" in httpx.get(url + "/", timeout=30).text
        texts = [random_words(rng, 3)]
        resp = client_for(url).chat.completions.create(
            model="ocrstream-embedded", messages=file_message(make_pdf(texts), "s.pdf")
        )
        (job_id,) = resp.model_extra["ocrstream"]["job_ids"]
        check_pages(job_result(url, job_id)["pages"], texts, [resp.choices[0].message.content])

        busy = subprocess.run(
            [*cmd, "--store", str(tmp_path / "store2")], env=env, capture_output=True, text=True, timeout=300
        )
        assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=120)
        log.close()
    assert rc == 0


def test_ingest_role_serves_it_without_torch():
    """The ingest image has no torch: the app with its OpenAI routes and console builds, and usage
    still counts the text prompt's tokens (tokenizer.json through the ``tokenizers`` package)."""
    import subprocess
    import sys

    from ocrstream.model.runtime import SHIPPED_MODEL_DIR
    from ocrstream.model.tokenizer import OcrTokenizer

    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "from ocrstream.services.ingest import api, console, openai_api\n"
        "t = openai_api.TokenizerPromptTokens('')\n"
        "print(t('free_ocr'), t('markdown'), *openai_api.checkpoint_model_names(''))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    tok = OcrTokenizer.from_file(SHIPPED_MODEL_DIR)
    n_free, n_md, *names = out.stdout.split()
    assert int(n_free) == len(tok.build_input_ids(PROMPTS["free_ocr"], [0])) > 1
    assert int(n_md) == len(tok.build_input_ids(PROMPTS["markdown"], [0])) > int(n_free)
    assert names == ["ocrstream-embedded"]
