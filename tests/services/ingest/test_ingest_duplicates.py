"""A document a stage failed before ingest marked it published is still a duplicate on resubmission:
it is not published (and refused by the rasterizer) a second time."""

from __future__ import annotations

import os

from ocrstream.messages import DocumentSubmitted, topic
from ocrstream.services.ingest.handler import Ingestor
from ocrstream.services.runtime import publish_messages

P = "dup."


def test_job_failed_before_the_published_mark_is_a_duplicate(backbone):
    prod = backbone.bus.producer()
    jobs = []

    def publish(msgs, span):  # noqa: ANN001 - as fast as the embedded pipeline's rasterizer thread
        publish_messages(prod, P, msgs, span)
        for m in msgs:
            if isinstance(m, DocumentSubmitted):
                jobs.append(m.job_id)
                ing.jobs.advance(m.job_id, "failed", reason="corrupt: PDF cannot be parsed")

    ing = Ingestor(backbone.store, publish, backbone.telemetry)
    broken = b"%PDF-1.7\n" + os.urandom(300)
    first = ing.submit(broken, "broken.pdf", "tiny")
    again = ing.submit(broken, "broken.pdf", "tiny")
    assert (first.duplicate, again.duplicate, again.job_id) == (False, True, first.job_id)
    assert again.status["status"] == "failed"
    assert len(backbone.bus.records(topic(DocumentSubmitted, P))) == 1 and jobs == [first.job_id]
