"""Assembler: page order, idempotence under redelivery, degraded documents."""

from __future__ import annotations

import json

from ocrstream import layout
from ocrstream.messages import DocumentCompleted, PageDecoded
from ocrstream.services.assembler.handler import AssemblerHandler
from tests.documents import random_words


def _decoded(page, n, text, failed=False):
    return PageDecoded(
        job_id="job",
        doc_id="doc",
        page=page,
        n_pages=n,
        mode="tiny",
        prompt="markdown",
        text=text,
        method="text_layer" if failed else "model",
        failed=failed,
    )


def test_out_of_order_with_duplicates_gives_one_ordered_result(backbone, rng):
    n = rng.randint(3, 8)
    texts = {p: random_words(rng, 4) for p in range(1, n + 1)}
    msgs = [_decoded(p, n, t) for p, t in texts.items()]
    deliveries = msgs + rng.sample(msgs, k=rng.randint(1, n))  # redelivered pages
    rng.shuffle(deliveries)
    last_page_in = max(deliveries.index(m) for m in msgs)  # completion only once all n are in
    h = AssemblerHandler(backbone.store, backbone.telemetry)
    outs = [h.handle(m) for m in deliveries]
    completions = [(i, o) for i, o in enumerate(outs) if o]
    assert [i for i, _ in completions] == [last_page_in]
    (done,) = completions[0][1]
    assert isinstance(done, DocumentCompleted) and (done.status, done.n_pages) == ("completed", n)
    md = backbone.store.get(layout.markdown_key("job")).decode()
    expected = "\n\n".join(f"<!-- page {p} -->\n\n{texts[p]}" for p in range(1, n + 1)) + "\n"
    assert md == expected
    result = json.loads(backbone.store.get(layout.result_key("job")))
    assert [p["page"] for p in result["pages"]] == list(range(1, n + 1))
    assert layout.Jobs(backbone.store).get("job")["status"] == "completed"


def test_degraded_when_failed_share_exceeds_rate(backbone):
    h = AssemblerHandler(backbone.store, backbone.telemetry, degraded_rate=0.25)
    outs = [h.handle(_decoded(p, 4, f"t{p}", failed=p == 2)) for p in (1, 2, 3, 4)]
    assert outs[-1][0].status == "completed"  # 1/4 is not above 0.25
    h2 = AssemblerHandler(backbone.store, backbone.telemetry, degraded_rate=0.2)
    msgs = [_decoded(p, 4, f"t{p}", failed=p in (2, 3)) for p in (1, 2, 3, 4)]
    msgs = [PageDecoded(**{**m.to_dict(), "job_id": "job2"}) for m in msgs]
    outs = [h2.handle(m) for m in msgs]
    assert (outs[-1][0].status, outs[-1][0].failed_pages) == ("degraded", [2, 3])
    assert layout.Jobs(backbone.store).get("job2")["status"] == "degraded"


class _CountingStore:
    """The backbone's store, counting the keys its lists return."""

    def __init__(self, inner) -> None:
        self.inner, self.listed = inner, 0

    def list(self, prefix: str, start_after: str = "") -> list[str]:
        keys = self.inner.list(prefix, start_after)
        self.listed += len(keys)
        return keys

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_replicas_sharing_a_store_complete_a_job_once(backbone, rng):
    n = rng.randint(5, 20)
    msgs = [_decoded(p, n, random_words(rng, 3)) for p in range(1, n + 1)]
    deliveries = msgs + rng.sample(msgs, k=rng.randint(1, n))
    rng.shuffle(deliveries)
    last_page_in = max(deliveries.index(m) for m in msgs)
    replicas = [AssemblerHandler(backbone.store, backbone.telemetry) for _ in range(rng.randint(2, 4))]
    outs = [rng.choice(replicas).handle(m) for m in deliveries]
    assert [i for i, o in enumerate(outs) if o] == [last_page_in]
    result = json.loads(backbone.store.get(layout.result_key("job")))
    assert [p["text"] for p in result["pages"]] == [m.text for m in msgs]


def test_completion_check_lists_only_unseen_pages(backbone, rng):
    n = rng.randint(40, 80)
    store = _CountingStore(backbone.store)
    h = AssemblerHandler(store, backbone.telemetry)
    outs = [h.handle(_decoded(p, n, f"t{p}")) for p in range(1, n + 1)]
    assert [bool(o) for o in outs] == [False] * (n - 1) + [True]
    # listing the job's whole prefix on every page would return n(n+1)/2 keys
    assert store.listed <= n, store.listed
