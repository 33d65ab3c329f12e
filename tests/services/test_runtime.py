"""The worker loop: commit after side effects, transient retry, poison and invalid records."""

from __future__ import annotations

import pytest

from ocrstream.config import WorkerConfig
from ocrstream.errors import StoreUnavailable
from ocrstream.messages import DeadLetter, DocumentCompleted, PageDecoded, topic
from ocrstream.services.runtime import SimpleHandler, Worker, publish_messages

P = "rt."


class Flaky(SimpleHandler):
    stage = "flaky"
    input_type = PageDecoded

    def __init__(self, transient=0, poison_page=0):
        self.transient, self.poison_page, self.seen = transient, poison_page, []

    def handle(self, msg):
        self.seen.append(msg.page)
        if self.transient:
            self.transient -= 1
            raise StoreUnavailable("minio down")
        if msg.page == self.poison_page:
            raise ZeroDivisionError("bug")
        return [DocumentCompleted(job_id=msg.job_id, doc_id=msg.doc_id, n_pages=msg.page, status="completed")]


def _msg(page):
    return PageDecoded(
        job_id="j", doc_id="d", page=page, n_pages=9, mode="m", prompt="p", text="t", method="model"
    )


def _worker(bb, handler, retries=3):
    cfg = WorkerConfig(max_batch=8, max_wait_ms=0, max_retries=retries, backoff_s=0.001, metrics_port=0)
    return Worker(handler, bb.bus, bb.telemetry, cfg, P)


def _out(bb, typ):
    return [typ.from_bytes(r.value, r.headers) for r in bb.bus.records(topic(typ, P))]


def test_transient_errors_are_retried_until_success(backbone):
    publish_messages(backbone.bus.producer(), P, [_msg(1), _msg(2)], None)
    h = Flaky(transient=3)
    w = _worker(backbone, h)
    assert w.run_once(0) == 2
    assert sorted(c.n_pages for c in _out(backbone, DocumentCompleted)) == [1, 2]
    assert len(h.seen) == 2 + 3  # three transient failures, each retried
    assert _out(backbone, DeadLetter) == []
    assert w.consumer.lag() == {(topic(PageDecoded, P), 0): 0}


def test_poison_record_dead_lettered_after_max_retries_others_served(backbone):
    publish_messages(backbone.bus.producer(), P, [_msg(1), _msg(2), _msg(3)], None)
    h = Flaky(poison_page=2)
    w = _worker(backbone, h, retries=3)
    w.run_once(0)
    assert h.seen.count(2) == 3
    assert sorted(c.n_pages for c in _out(backbone, DocumentCompleted)) == [1, 3]
    (dl,) = _out(backbone, DeadLetter)
    assert (dl.reason, dl.page, dl.stage, dl.original_topic) == ("poison", 2, "flaky", topic(PageDecoded, P))
    assert "ZeroDivisionError" in dl.detail


def test_invalid_record_dead_lettered(backbone):
    backbone.bus.producer().publish(topic(PageDecoded, P), "k", b'{"job_id": 3}', [])
    backbone.bus.producer().publish(topic(PageDecoded, P), "k", b"\xff not json", [])
    w = _worker(backbone, Flaky())
    assert w.run_once(0) == 2
    reasons = [d.reason for d in _out(backbone, DeadLetter)]
    assert reasons == ["invalid_message", "invalid_message"]


def test_crash_before_commit_redelivers(backbone):
    publish_messages(backbone.bus.producer(), P, [_msg(1), _msg(2)], None)

    class Crash(Flaky):
        def handle(self, msg):
            raise SystemExit("killed")

    w = _worker(backbone, Crash())
    with pytest.raises(SystemExit):
        w.run_once(0)
    w2 = _worker(backbone, Flaky())
    assert w2.run_once(0) == 2  # nothing was committed: both come back
    assert w2.run_once(0) == 0
