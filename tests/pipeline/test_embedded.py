"""The embedded pipeline end to end (in-memory bus, local store, in-process cache) with a tiny
random-weight model: a random model loops or never stops, so pages run the whole guard ladder and
fall back to the PDF text layer, which makes the expected text known exactly."""

from __future__ import annotations

import json
import re

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ocrstream import layout
from ocrstream.config import DecoderConfig
from ocrstream.messages import PageDecoded, topic
from ocrstream.pipeline.runner import Pipeline
from tests.documents import make_pdf, random_words

ENV = {"OCRSTREAM_INGEST_DEFAULT_MODE": "tiny", "OCRSTREAM_DECODER_MAX_BATCH": "4"}
DEC = DecoderConfig(max_new_tokens=16, ladder="t=0.0;t=0.7;mode=small")


def _docs(tmp_path, rng, n_docs):
    docs = {}
    for i in range(n_docs):
        texts = [random_words(rng, 3) for _ in range(rng.randint(1, 3))]
        p = tmp_path / "in" / f"doc{i}.pdf"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(make_pdf(texts))
        docs[p] = texts
    return docs


def _sections(md: str) -> list[tuple[int, str]]:
    parts = re.split(r"<!-- page (\d+) -->", md)
    return [(int(parts[i]), parts[i + 1].strip()) for i in range(1, len(parts), 2)]


def test_pdfs_in_one_result_per_page_in_order(tmp_path, rng, tiny_model):
    docs = _docs(tmp_path, rng, 3)
    pipe = Pipeline.embedded(tmp_path / "store", tiny_model, env=ENV, decoder_cfg=DEC)
    summaries = pipe.run(list(docs), tmp_path / "out")
    assert len(summaries) == len(docs)
    for (path, texts), s in zip(docs.items(), summaries, strict=True):
        assert s["status"] in ("completed", "degraded") and s["n_pages"] == len(texts)
        md = (tmp_path / "out" / f"{path.stem}.md").read_text()
        sections = _sections(md)
        assert [n for n, _ in sections] == list(range(1, len(texts) + 1))
        result = json.loads((tmp_path / "out" / f"{path.stem}.json").read_text())
        assert [p["page"] for p in result["pages"]] == list(range(1, len(texts) + 1))
        for page, text, (_, body) in zip(result["pages"], texts, sections, strict=True):
            assert page["mode"] == "tiny" and page["tokens"]["vision"] > 0
            assert page["attempts"] and page["method"] in ("model", "text_layer")
            if page["method"] == "text_layer":
                # the whole ladder ran: greedy, sampled, then another mode
                assert [a.get("mode") for a in page["attempts"]] == [None, None, "small"]
                assert page["failed"] and page["text"] == text == body
        failed_share = len(result["failed_pages"]) / result["n_pages"]
        assert s["status"] == ("degraded" if failed_share > 0.1 else "completed")
    # every page decoded exactly once (no redelivery in this run)
    decoded = [PageDecoded.from_bytes(r.value) for r in pipe.bus.records(topic(PageDecoded, pipe.prefix))]
    assert sorted((d.job_id, d.page) for d in decoded) == sorted({(d.job_id, d.page) for d in decoded})
    assert len(decoded) == sum(len(t) for t in docs.values())


def test_duplicate_submission_detected(tmp_path, rng, tiny_model):
    docs = _docs(tmp_path, rng, 1)
    pipe = Pipeline.embedded(tmp_path / "store", tiny_model, env=ENV, decoder_cfg=DEC)
    (path,) = docs
    first = pipe.submit_paths([path])[0]
    copy = tmp_path / "copy.pdf"
    copy.write_bytes(path.read_bytes())
    again = pipe.submit_paths([copy])[0]
    assert (again.job_id, again.duplicate, first.duplicate) == (first.job_id, True, False)


def test_redecode_new_prompt_zero_encoder_calls(tmp_path, rng, tiny_model):
    docs = _docs(tmp_path, rng, 2)
    pipe = Pipeline.embedded(tmp_path / "store", tiny_model, env=ENV, decoder_cfg=DEC)
    first = pipe.run(list(docs), tmp_path / "out")
    calls = pipe.encoder.encode_calls
    n_pages = sum(len(t) for t in docs.values())
    assert calls >= n_pages  # every page encoded once in its mode (+ fallback-mode encodes)
    for s in first:
        sub = pipe.redecode(s["job_id"], prompt="markdown")
        assert sub.job_id != s["job_id"] and not sub.duplicate
        st = pipe.ingestor.status(sub.job_id)
        assert st["status"] in ("completed", "degraded") and st["prompt"] == "markdown"
        result = json.loads(pipe.store.get(layout.result_key(sub.job_id)))
        assert [p["page"] for p in result["pages"]] == list(range(1, s["n_pages"] + 1))
        assert all(p["prompt"] == "markdown" and p["cache_hit"] for p in result["pages"])
    assert pipe.encoder.encode_calls == calls  # counted: zero encoder calls for the re-decodes


def test_one_trace_per_document_across_stages(tmp_path, rng, tiny_model):
    docs = _docs(tmp_path, rng, 2)
    exporter = InMemorySpanExporter()
    pipe = Pipeline.embedded(tmp_path / "store", tiny_model, env=ENV, decoder_cfg=DEC, exporter=exporter)
    summaries = pipe.run(list(docs), tmp_path / "out")
    spans = exporter.get_finished_spans()
    roots = {s.attributes["ocrstream.job_id"]: s for s in spans if s.name == "document"}
    assert set(roots) == {s["job_id"] for s in summaries}
    assert len({r.context.trace_id for r in roots.values()}) == len(roots)
    for (_path, texts), s in zip(docs.items(), summaries, strict=True):
        trace_id = roots[s["job_id"]].context.trace_id
        mine = [sp for sp in spans if sp.context.trace_id == trace_id]
        names = {sp.name for sp in mine}
        assert "rasterize" in names
        for page in range(1, len(texts) + 1):
            for stage in ("encode", "decode", "assemble"):
                assert f"{stage} page {page}" in names, (stage, page, sorted(names))
        # every span of this trace belongs to this job
        assert {
            sp.attributes.get("ocrstream.job_id") for sp in mine if "ocrstream.job_id" in sp.attributes
        } == {s["job_id"]}


class _KilledAfter:
    """A producer that dies (SystemExit, as a SIGKILL would stop the process) after n publishes."""

    def __init__(self, inner, n):
        self.inner, self.n = inner, n

    def publish(self, *a, **kw):
        if self.n == 0:
            raise SystemExit("killed")
        self.n -= 1
        self.inner.publish(*a, **kw)

    def flush(self):
        self.inner.flush()

    def close(self):
        pass


def test_worker_killed_mid_batch_no_page_lost_or_duplicated(tmp_path, rng, tiny_model):
    docs = {}
    while sum(len(t) for t in docs.values()) < 5:  # more pages than one decoder batch (4)
        docs = _docs(tmp_path, rng, 3)
    pipe = Pipeline.embedded(tmp_path / "store", tiny_model, env=ENV, decoder_cfg=DEC)
    subs = pipe.submit_paths(list(docs))
    for s in ("rasterizer", "encoder", "encoder", "encoder"):
        pipe.workers[s].run_once(0)
    dec = pipe.workers["decoder"]
    dec.producer = _KilledAfter(dec.producer, 2)
    with pytest.raises(SystemExit):
        dec.run_once(0)
    pipe.workers["assembler"].run_once(0)  # the two pages that got out before the kill
    pipe.restart("decoder")  # same consumer group: uncommitted batch is redelivered
    pipe.pump([s.job_id for s in subs])
    decoded = [PageDecoded.from_bytes(r.value) for r in pipe.bus.records(topic(PageDecoded, pipe.prefix))]
    keys = [(d.job_id, d.page) for d in decoded]
    assert len(keys) == len(set(keys)) + 2  # the two pages of the killed batch were redelivered
    for s, texts in zip(subs, docs.values(), strict=True):
        st = pipe.ingestor.status(s.job_id)
        assert st["status"] in ("completed", "degraded")
        md = pipe.store.get(layout.markdown_key(s.job_id)).decode()
        assert [n for n, _ in _sections(md)] == list(range(1, len(texts) + 1))
        assert pipe.store.list(layout.page_result_prefix(s.job_id)) == [
            layout.page_result_key(s.job_id, p) for p in range(1, len(texts) + 1)
        ]


def test_one_runner_two_ways_of_running(tmp_path, rng, tiny_model):
    """The same runner with its stages in threads (``ocrstream serve``'s way): the same results per
    page; the ingestor is the runner's one; a pumped runner has no threads to start."""
    docs = _docs(tmp_path, rng, 2)
    pipe = Pipeline.embedded(tmp_path / "store", tiny_model, env=ENV, decoder_cfg=DEC, runner="threads")
    assert set(pipe.telemetry) == {"rasterizer", "encoder", "decoder", "assembler", "ingest"}
    assert len({id(t) for t in pipe.telemetry.values()}) == 1  # one process: one telemetry
    pipe.start()
    try:
        summaries = pipe.run(list(docs), tmp_path / "out")
        done, total = pipe.page_progress([s["job_id"] for s in summaries])
    finally:
        pipe.stop()
        pipe.close()
    assert done == total == sum(len(t) for t in docs.values())
    for (path, texts), s in zip(docs.items(), summaries, strict=True):
        assert s["status"] in ("completed", "degraded") and s["n_pages"] == len(texts)
        result = json.loads((tmp_path / "out" / f"{path.stem}.json").read_text())
        for page, text in zip(result["pages"], texts, strict=True):
            assert page["method"] in ("model", "text_layer")
            if page["method"] == "text_layer":
                assert page["text"] == text
    pumped = Pipeline.embedded(tmp_path / "store2", tiny_model, env=ENV, decoder_cfg=DEC)
    with pytest.raises(RuntimeError, match="threads"):
        pumped.start()
    with pytest.raises(ValueError, match="runner"):
        Pipeline.embedded(tmp_path / "store3", tiny_model, runner="fork")
