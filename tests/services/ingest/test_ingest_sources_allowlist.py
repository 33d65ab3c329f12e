"""What the document sources may read: the reference topic only under allow-listed local roots and
buckets (symlinks resolved first), a watched folder never through a link that leaves it."""

from __future__ import annotations

import io
import os

import pytest

from ocrstream.config import IngestConfig, WorkerConfig
from ocrstream.errors import NotFound, OversizedDocument
from ocrstream.messages import DeadLetter, DocumentRef, DocumentSubmitted, topic
from ocrstream.services.ingest.handler import Ingestor, RefHandler
from ocrstream.services.ingest.sources import FolderSource, ForbiddenBucket, ForbiddenPath, make_fetcher
from ocrstream.services.runtime import Worker, publish_messages
from tests.documents import make_pdf, random_words

P = "src."


def _ingestor(bb, max_bytes=10_000_000):
    prod = bb.bus.producer()
    return Ingestor(bb.store, lambda m, s: publish_messages(prod, P, m, s), bb.telemetry, max_bytes=max_bytes)


def _tree(tmp_path, rng):
    root, outside = tmp_path / "refs", tmp_path / "private"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    inside = root / "sub" / "in.pdf"
    inside.write_bytes(make_pdf([random_words(rng, 2)]))
    secret = outside / "secret.pdf"
    secret.write_bytes(make_pdf([random_words(rng, 2)]))
    return root, outside, inside, secret


def test_reference_fetcher_reads_only_inside_the_allowed_roots(tmp_path, rng):
    root, outside, inside, secret = _tree(tmp_path, rng)
    (root / "link-out.pdf").symlink_to(secret)
    (root / "link-in.pdf").symlink_to(inside)
    (root / "dir-out").symlink_to(outside, target_is_directory=True)
    fetch = make_fetcher(None, roots=[str(root)])
    assert fetch(str(inside)) == inside.read_bytes()
    assert fetch(f"file://{inside}") == inside.read_bytes()
    assert fetch(str(root / "link-in.pdf")) == inside.read_bytes()  # a link that stays inside is fine
    for uri in (
        str(secret),
        str(root / "link-out.pdf"),
        str(root / "dir-out" / "secret.pdf"),
        f"{root}/sub/../../private/secret.pdf",
        "/etc/hostname",
    ):
        with pytest.raises(ForbiddenPath) as err:
            fetch(uri)
        assert err.value.reason == "forbidden_path" and "OCRSTREAM_INGEST_REF_ROOTS" in str(err.value)
    with pytest.raises(NotFound):
        fetch(str(root / "missing.pdf"))
    with pytest.raises(ForbiddenPath):
        make_fetcher(None)(str(inside))  # no roots configured: no local path at all
    with pytest.raises(ValueError, match="absolute"):
        make_fetcher(None, roots=["relative/dir"])
    small = make_fetcher(None, roots=[str(root)], max_bytes=100)
    with pytest.raises(OversizedDocument):
        small(str(inside))


def test_reference_fetcher_refuses_buckets_not_listed():
    fetch = make_fetcher(None, buckets=["inbox"])
    for uri in ("s3://ocrstream/jobs/x/result.json", "s3://other/doc.pdf", "s3:///doc.pdf"):
        with pytest.raises(ForbiddenBucket) as err:
            fetch(uri)
        assert "OCRSTREAM_INGEST_REF_BUCKETS" in str(err.value)
    assert IngestConfig.from_env({}).ref_buckets == () and IngestConfig.from_env({}).ref_roots == ()
    cfg = IngestConfig.from_env({"OCRSTREAM_INGEST_REF_ROOTS": "/a,/b", "OCRSTREAM_INGEST_REF_BUCKETS": "x"})
    assert (cfg.ref_roots, cfg.ref_buckets) == (("/a", "/b"), ("x",))


@pytest.mark.minio
def test_reference_fetcher_on_a_real_bucket(minio_client, minio_bucket, rng):
    data = make_pdf([random_words(rng, 2)])
    minio_client.put_object(minio_bucket, "in/doc.pdf", io.BytesIO(data), len(data))
    assert make_fetcher(minio_client, buckets=[minio_bucket])(f"s3://{minio_bucket}/in/doc.pdf") == data
    with pytest.raises(ForbiddenBucket):
        make_fetcher(minio_client, buckets=["elsewhere"])(f"s3://{minio_bucket}/in/doc.pdf")
    with pytest.raises(OversizedDocument):
        make_fetcher(minio_client, buckets=[minio_bucket], max_bytes=len(data) - 1)(
            f"s3://{minio_bucket}/in/doc.pdf"
        )


def test_forbidden_references_are_dead_lettered_not_retried(backbone, tmp_path, rng):
    root, _, inside, secret = _tree(tmp_path, rng)
    ing = _ingestor(backbone)
    refs = [DocumentRef(uri=str(inside)), DocumentRef(uri=str(secret)), DocumentRef(uri="s3://any/doc.pdf")]
    publish_messages(backbone.bus.producer(), P, refs, None)
    handler = RefHandler(ing, make_fetcher(None, roots=[str(root)]))
    w = Worker(handler, backbone.bus, backbone.telemetry, WorkerConfig(max_wait_ms=0, metrics_port=0), P)
    assert w.run_once(0) == 3 and w.run_once(0) == 0
    dls = [DeadLetter.from_bytes(r.value) for r in backbone.bus.records(topic(DeadLetter, P))]
    assert sorted((d.original_key, d.reason) for d in dls) == sorted(
        [(str(secret), "forbidden_path"), ("s3://any/doc.pdf", "forbidden_bucket")]
    )
    assert [
        DocumentSubmitted.from_bytes(r.value).filename
        for r in backbone.bus.records(topic(DocumentSubmitted, P))
    ] == ["in.pdf"]


def test_watched_folder_skips_links_that_leave_it(backbone, tmp_path, rng):
    root, _, inside, secret = _tree(tmp_path, rng)
    (root / "leak.pdf").symlink_to(secret)
    (root / "again.pdf").symlink_to(inside)
    ing = _ingestor(backbone)
    src = FolderSource(root, ing, backbone.store)
    assert src.scan() == 1  # in.pdf; the inside link resolves to it (one marker per real file)
    assert src.scan() == 0
    subs = [DocumentSubmitted.from_bytes(r.value) for r in backbone.bus.records(topic(DocumentSubmitted, P))]
    assert [s.filename for s in subs] == ["again.pdf"]  # scanned first; in.pdf is the same real file
    assert secret.read_bytes() not in [
        backbone.store.get(k) for k in backbone.store.list("docs/") if k.endswith("source")
    ]
    dls = [DeadLetter.from_bytes(r.value) for r in backbone.bus.records(topic(DeadLetter, P))]
    assert [(d.reason, d.original_key) for d in dls] == [("forbidden_path", str(root / "leak.pdf"))]  # once
    big = root / "big.pdf"
    big.write_bytes(b"%PDF" + os.urandom(2000))
    assert FolderSource(root, _ingestor(backbone, max_bytes=1000), backbone.store).scan() == 0
    dls = [DeadLetter.from_bytes(r.value) for r in backbone.bus.records(topic(DeadLetter, P))]
    assert (dls[-1].reason, dls[-1].original_key) == ("oversized", str(big))


def test_chat_image_urls_follow_the_configured_prefixes_and_buckets(tmp_path):
    """The OpenAI endpoint's reference policy comes from the ingest settings: nothing by default,
    exactly the configured buckets and http(s) prefixes otherwise."""
    from ocrstream.config import CommonConfig, IngestConfig
    from ocrstream.errors import PermanentError
    from ocrstream.services.ingest.main import _openai

    common = CommonConfig.from_env({}, store="local", store_dir=str(tmp_path), cache="memory")
    closed = _openai(common, IngestConfig.from_env({}), None).references
    env = {
        "OCRSTREAM_INGEST_REF_BUCKETS": "scans",
        "OCRSTREAM_INGEST_REF_HTTP_PREFIXES": "https://docs.example.com/pub/,http://10.0.0.7/in/",
    }
    opened = _openai(common, IngestConfig.from_env(env), None).references
    assert opened.http_prefixes == ("https://docs.example.com/pub/", "http://10.0.0.7/in/")
    for uri, ok in (
        ("https://docs.example.com/pub/a.pdf", True),
        ("http://10.0.0.7/in/b.png", True),
        ("https://docs.example.com/private/a.pdf", False),
        ("s3://scans/x.pdf", True),
        ("s3://other/x.pdf", False),
    ):
        try:
            opened.check(uri)
            assert ok, uri
        except PermanentError:
            assert not ok, uri
        with pytest.raises(PermanentError):
            closed.check(uri)


def test_ingest_loads_its_model_with_the_shared_device_rule(tmp_path):
    """OCRSTREAM_DEVICE=auto (what a GPU chart sets) resolves like every other role's: on this
    machine the CPU in fp32, never the raw string handed to torch."""
    import torch

    from ocrstream.config import CommonConfig
    from ocrstream.services.ingest.main import _load_model

    common = CommonConfig.from_env(
        {"OCRSTREAM_DEVICE": "auto"}, store="local", store_dir=str(tmp_path), cache="memory"
    )
    model = _load_model(common)
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.device.type == want
    if want == "cpu":
        assert model.model.dtype == torch.float32
