"""Job status is a compare-and-set (issue 13, item 10): replicas racing to finish a job, against the
real S3 server (versitygw, conditional PUT) and the local store (flock), threads and processes.

The races are forced, not hoped for: a rendezvous store makes every racer read the job's status
before any of them writes it, the interleaving under which a plain read-modify-write lets all of
them "complete" the job."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from ocrstream import layout
from ocrstream.messages import DocumentCompleted, PageDecoded
from ocrstream.services.assembler.handler import AssemblerHandler
from ocrstream.store.base import WriteConflict, update_json
from ocrstream.store.local import LocalStore
from ocrstream.telemetry import Telemetry
from tests.documents import random_words


class _Rendezvous:
    """Wraps a store: each thread's first read of ``key`` waits until every racer has read it."""

    def __init__(self, inner, key: str, barrier: threading.Barrier) -> None:
        self.inner, self.key, self.barrier = inner, key, barrier
        self.waited = False

    def _meet(self, key: str) -> None:
        if key == self.key and not self.waited:
            self.waited = True
            self.barrier.wait(timeout=60)

    def get(self, key: str) -> bytes:
        try:
            return self.inner.get(key)
        finally:
            self._meet(key)

    def get_versioned(self, key: str):  # noqa: ANN201
        try:
            return self.inner.get_versioned(key)
        finally:
            self._meet(key)

    def __getattr__(self, name):  # noqa: ANN001, ANN204
        return getattr(self.inner, name)


@pytest.fixture
def rng() -> random.Random:
    return random.Random(os.urandom(8))


@pytest.fixture
def s3_stores(minio_endpoint, minio_bucket):
    """A factory of S3Store clients of one test bucket (each its own connection pool)."""
    from ocrstream.store.s3 import S3Store

    e = minio_endpoint
    return lambda: S3Store(
        e.endpoint, e.access_key, e.secret_key, minio_bucket, secure=e.secure, create=False
    )


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.minio)])
def stores(request, tmp_path):
    """Fresh clients of one shared store: a local folder, or a bucket on the real S3 server."""
    if request.param == "local":
        return lambda: LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_stores")


# ---- the store primitives ----------------------------------------------------------------------


def test_put_if_creates_once_and_replaces_only_the_version_read(stores):
    store = stores()
    key = f"cas/{uuid.uuid4().hex}.json"
    a, b = os.urandom(16), os.urandom(16)
    store.put_if(key, a, None)
    with pytest.raises(WriteConflict):
        store.put_if(key, b, None)  # create-only: it exists now
    data, version = store.get_versioned(key)
    assert data == a
    store.put_if(key, b, version)
    with pytest.raises(WriteConflict):
        store.put_if(key, os.urandom(16), version)  # stale: b replaced the version read
    assert store.get(key) == b
    _, version = store.get_versioned(key)
    store.delete(key)
    with pytest.raises(WriteConflict):
        store.put_if(key, a, version)  # deleted since read
    assert not store.exists(key)


def test_concurrent_read_modify_write_loses_no_update(stores, rng):
    """Racing increments through ``update_json``: the count equals the successful writes. On
    versitygw this needs the version of the bytes read (its GET can pair a body with the next
    version's ETag; an If-Match on that ETag overwrote increments)."""
    key = f"cas/{uuid.uuid4().hex}.json"
    update_json(stores(), key, lambda _cur: {"n": 0, "by": []})
    n_threads, per_thread = rng.randint(5, 8), rng.randint(12, 20)

    def work(i: int) -> int:
        store = stores()
        for _ in range(per_thread):
            update_json(store, key, lambda cur: {"n": cur["n"] + 1, "by": [*cur["by"], i]}, attempts=500)
        return i

    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(work, range(n_threads)))
    final = json.loads(stores().get(key))
    assert final["n"] == n_threads * per_thread
    assert sorted(final["by"]) == sorted(i for i in range(n_threads) for _ in range(per_thread))


@pytest.mark.minio
def test_s3_store_learns_its_servers_etags_from_single_part_writes(s3_stores):
    """The version sent is the MD5 of the bytes read only where the server's ETags are MD5s; a
    multipart upload's ETag (``<md5>-<parts>``) must not teach the opposite."""
    store = s3_stores()
    assert store.etags_are_md5 is None
    big = f"cas/{uuid.uuid4().hex}"
    store.put(big, os.urandom(6 * 1024 * 1024))  # over the SDK's 5 MiB part size: multipart
    assert store.etags_are_md5 is None
    small = f"cas/{uuid.uuid4().hex}"
    store.put_if(small, os.urandom(32), None)
    assert store.etags_are_md5 is True  # versitygw: single-part ETags are MD5s
    data, version = store.get_versioned(small)
    assert version == hashlib.md5(data).hexdigest()  # noqa: S324


class _LostAnswer:
    """A store whose first conditional write lands but answers as a conflict (a resend refused)."""

    def __init__(self, inner) -> None:
        self.inner, self.lost = inner, False

    def put_if(self, key, data, version, content_type="application/octet-stream"):  # noqa: ANN001
        self.inner.put_if(key, data, version, content_type)
        if not self.lost:
            self.lost = True
            raise WriteConflict("answer lost")

    def __getattr__(self, name):  # noqa: ANN001, ANN204
        return getattr(self.inner, name)


def test_update_whose_answer_was_lost_is_applied_once(tmp_path, rng):
    store = _LostAnswer(LocalStore(tmp_path))
    start = rng.randint(0, 1000)
    update_json(store, "k.json", lambda _cur: {"n": start})
    calls = []

    def inc(cur):  # noqa: ANN001, ANN202
        calls.append(cur["n"])
        return {"n": cur["n"] + 1}

    rec = update_json(store, "k.json", inc)
    assert rec is not None and rec["n"] == start + 1
    assert json.loads(store.get("k.json"))["n"] == start + 1
    assert calls == [start]


# ---- Jobs.advance: replicas racing to finish one job -------------------------------------------


def _race_advance(stores, racers: int) -> tuple[str, list[dict | None]]:
    job = f"job-{uuid.uuid4().hex[:12]}"
    layout.Jobs(stores()).create(job)
    layout.Jobs(stores()).advance(job, "rasterized", n_pages=3)
    barrier = threading.Barrier(racers)

    def finish(i: int) -> dict | None:
        store = _Rendezvous(stores(), layout.status_key(job), barrier)
        return layout.Jobs(store).advance(job, "completed", finished_by=i)

    with ThreadPoolExecutor(racers) as pool:
        return job, list(pool.map(finish, range(racers)))


def test_replicas_racing_to_finish_a_job_exactly_one_wins(stores, rng):
    for _ in range(3):
        racers = rng.randint(2, 6)
        job, outs = _race_advance(stores, racers)
        winners = [i for i, out in enumerate(outs) if out is not None]
        assert len(winners) == 1, outs
        final = layout.Jobs(stores()).get(job)
        assert (final["status"], final["finished_by"], final["n_pages"]) == ("completed", winners[0], 3)


def _advance_in_process(root: str, job: str, i: int, barrier, results) -> None:  # noqa: ANN001
    store = _Rendezvous(LocalStore(root), layout.status_key(job), barrier)
    results.put((i, layout.Jobs(store).advance(job, "degraded", finished_by=i) is not None))


def test_processes_racing_on_the_local_store_exactly_one_wins(tmp_path, rng):
    ctx = multiprocessing.get_context("fork")  # no threads are running in this test's process
    root = str(tmp_path / "store")
    for _ in range(2):
        job = f"job-{uuid.uuid4().hex[:12]}"
        layout.Jobs(LocalStore(root)).advance(job, "rasterized", n_pages=1)
        racers = rng.randint(2, 4)
        barrier, results = ctx.Barrier(racers), ctx.Queue()
        procs = [
            ctx.Process(target=_advance_in_process, args=(root, job, i, barrier, results))
            for i in range(racers)
        ]
        for p in procs:
            p.start()
        outs = dict(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        winners = [i for i, won in outs.items() if won]
        assert len(winners) == 1, outs
        assert layout.Jobs(LocalStore(root)).get(job)["finished_by"] == winners[0]


def test_terminal_status_is_final(stores):
    jobs = layout.Jobs(stores())
    job = f"job-{uuid.uuid4().hex[:12]}"
    assert jobs.advance(job, "rasterized", defaults={"doc_id": "d"}, n_pages=2)["doc_id"] == "d"
    assert jobs.advance(job, "failed", reason="x")["status"] == "failed"
    assert jobs.advance(job, "failed", reason="y") is None  # a second finish, same status
    assert jobs.advance(job, "completed") is None
    assert jobs.advance(job, "rasterized") is None
    assert (jobs.get(job)["status"], jobs.get(job)["reason"]) == ("failed", "x")


# ---- the assembler: two replicas handed the job's last page at once -----------------------------


def _decoded(job: str, page: int, n: int, text: str) -> PageDecoded:
    return PageDecoded(
        job_id=job,
        doc_id="doc",
        page=page,
        n_pages=n,
        mode="tiny",
        prompt="free_ocr",
        text=text,
        method="model",
    )


def test_assembler_replicas_racing_on_the_last_page_complete_the_job_once(stores, rng):
    job = f"job-{uuid.uuid4().hex[:12]}"
    n = rng.randint(2, 9)
    texts = [random_words(rng, 3) for _ in range(n)]
    tel = Telemetry("test")
    layout.Jobs(stores()).advance(job, "rasterized", n_pages=n)
    first = AssemblerHandler(stores(), tel)
    for p in range(1, n):
        assert first.handle(_decoded(job, p, n, texts[p - 1])) == []
    racers = rng.randint(2, 4)
    barrier = threading.Barrier(racers)
    # The last page delivered to every replica at once (a redelivery across a rebalance).
    replicas = [
        AssemblerHandler(_Rendezvous(stores(), layout.status_key(job), barrier), tel) for _ in range(racers)
    ]
    with ThreadPoolExecutor(racers) as pool:
        outs = list(pool.map(lambda h: h.handle(_decoded(job, n, n, texts[-1])), replicas))
    completions = [m for out in outs for m in out]
    assert len(completions) == 1, outs
    assert isinstance(completions[0], DocumentCompleted) and completions[0].n_pages == n
    store = stores()
    assert layout.Jobs(store).get(job)["status"] == "completed"
    result = json.loads(store.get(layout.result_key(job)))
    assert [(p["page"], p["text"]) for p in result["pages"]] == list(zip(range(1, n + 1), texts, strict=True))
    # and any later redelivery stays silent
    assert AssemblerHandler(stores(), tel).handle(_decoded(job, rng.randint(1, n), n, "x")) == []
