"""Request fields are checked at the door: a bad mode (or prompt, file name, id) gets HTTP 400 and a
dead-letter record, and a bad reference-topic record is dead-lettered once, never retried."""

from __future__ import annotations

import random
import string

from fastapi.testclient import TestClient

from ocrstream.config import WorkerConfig
from ocrstream.messages import DeadLetter, DocumentRef, DocumentSubmitted, topic
from ocrstream.services.ingest.api import create_app
from ocrstream.services.ingest.handler import Ingestor, RefHandler
from ocrstream.services.ingest.sources import make_fetcher
from ocrstream.services.runtime import Worker, publish_messages
from tests.documents import make_pdf, random_words

P = "val."
KEY = {"X-API-Key": "k"}


def _setup(bb):
    prod = bb.bus.producer()
    ing = Ingestor(bb.store, lambda m, s: publish_messages(prod, P, m, s), bb.telemetry)
    return ing, TestClient(create_app(ing, bb.telemetry, ("k",)))


def _dead(bb) -> list[DeadLetter]:
    return [DeadLetter.from_bytes(r.value, r.headers) for r in bb.bus.records(topic(DeadLetter, P))]


def _submitted(bb) -> list[DocumentSubmitted]:
    return [DocumentSubmitted.from_bytes(r.value) for r in bb.bus.records(topic(DocumentSubmitted, P))]


def _bad_mode(rng: random.Random) -> str:
    return rng.choice(
        [
            str(rng.choice([20000, 4096, 2064, 8, 0]) + rng.choice([0, 16])),  # past the pixel limits
            f"{rng.randrange(4, 128) * 16}x{rng.randrange(129, 2000) * 16}",
            f"reflow-{rng.randint(2049, 99999)}",
            "../" + "".join(rng.choices(string.ascii_lowercase, k=6)),
            "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) + "-mode",
            f"{rng.randrange(4, 128) * 16 + rng.randint(1, 15)}",  # not a multiple of 16
        ]
    )


def test_bad_mode_and_prompt_get_400_and_a_dead_letter(backbone, rng):
    _, client = _setup(backbone)
    pdf = make_pdf([random_words(rng, 3)])
    sent = []
    for _ in range(4):
        mode = _bad_mode(rng)
        name = f"{random_words(rng, 1)}.pdf"
        r = client.post("/v1/documents", files={"file": (name, pdf)}, data={"mode": mode}, headers=KEY)
        assert r.status_code == 400, (mode, r.text)
        assert r.json()["reason"] == "bad_mode" and repr(mode) in r.json()["detail"]
        sent.append((name, mode))
    prompt = random_words(rng, 4)  # neither a prompt name nor a raw prompt with <image>
    r = client.post("/v1/documents", files={"file": ("p.pdf", pdf)}, data={"prompt": prompt}, headers=KEY)
    assert r.status_code == 400 and r.json()["reason"] == "bad_prompt", r.text
    long_name = "".join(rng.choices(string.ascii_lowercase, k=1100)) + ".pdf"
    r = client.post("/v1/documents", files={"file": (long_name, pdf)}, headers=KEY)
    assert r.status_code == 400 and r.json()["reason"] == "bad_filename", r.text

    dead = _dead(backbone)
    assert [(d.stage, d.reason, d.original_key) for d in dead] == [
        *[("ingest", "bad_mode", name) for name, _ in sent],
        ("ingest", "bad_prompt", "p.pdf"),
        ("ingest", "bad_filename", long_name[:1024]),
    ]
    assert all(d.original_topic == "http POST /v1/documents" for d in dead)
    assert [mode in d.original_value for d, (_, mode) in zip(dead, sent, strict=False)] == [True] * len(sent)
    # Refused at the door: nothing stored, nothing submitted.
    assert _submitted(backbone) == [] and backbone.store.list("docs/") == []


def test_good_modes_pass_in_canonical_spelling(backbone, rng):
    _, client = _setup(backbone)
    side = rng.randrange(4, 129) * 16
    for mode, canonical in (
        ("Reflow_256", "reflow-256"),
        (f"{side}", f"{side}"),
        ("GUNDAM", "gundam"),
        ("auto", "auto"),
    ):
        pdf = make_pdf([random_words(rng, 3)])
        r = client.post("/v1/documents", files={"file": ("a.pdf", pdf)}, data={"mode": mode}, headers=KEY)
        assert r.status_code == 202, (mode, r.text)
        assert _submitted(backbone)[-1].mode == canonical
        assert client.get(f"/v1/jobs/{r.json()['job_id']}", headers=KEY).json()["mode"] == canonical
    assert _dead(backbone) == []


def test_redecode_and_job_ids_are_checked(backbone, rng):
    ing, client = _setup(backbone)
    sub = ing.submit(make_pdf([random_words(rng, 2)]), "a.pdf", "tiny")
    r = client.post(
        f"/v1/jobs/{sub.job_id}/redecode", data={"prompt": "markdown", "mode": "99999"}, headers=KEY
    )
    assert r.status_code == 400 and r.json()["reason"] == "bad_mode", r.text
    r = client.post(f"/v1/jobs/{sub.job_id}/redecode", data={"prompt": "no image tag here"}, headers=KEY)
    assert r.status_code == 400 and r.json()["reason"] == "bad_prompt", r.text
    assert [d.reason for d in _dead(backbone)] == ["bad_mode", "bad_prompt"]
    for bad in ("..", "unknown", sub.job_id + "x", "%2e%2e"):
        assert client.get(f"/v1/jobs/{bad}", headers=KEY).status_code == 404
        assert client.get(f"/v1/jobs/{bad}/result", headers=KEY).status_code == 404
    r = client.get(f"/v1/jobs/{sub.job_id}/result?format=pdf", headers=KEY)
    assert r.status_code == 400 and r.json()["reason"] == "bad_request"


def test_reference_with_a_bad_mode_is_dead_lettered_once(backbone, rng, tmp_path):
    ing, _ = _setup(backbone)
    doc = tmp_path / "r.pdf"
    doc.write_bytes(make_pdf([random_words(rng, 2)]))
    fetched = []
    fetch = make_fetcher(None, roots=[tmp_path])
    handler = RefHandler(ing, lambda uri: fetched.append(uri) or fetch(uri))
    mode = _bad_mode(rng)
    publish_messages(
        backbone.bus.producer(),
        P,
        [
            DocumentRef(uri=str(doc), mode=mode),
            DocumentRef(uri=str(doc), prompt="plain words"),
            DocumentRef(uri=str(doc)),
        ],
        None,
    )
    w = Worker(
        handler,
        backbone.bus,
        backbone.telemetry,
        WorkerConfig(max_wait_ms=0, metrics_port=0, max_retries=3),
        P,
    )
    assert w.run_once(0) == 3
    assert w.run_once(0) == 0  # committed: nothing comes back, nothing is retried
    assert [(d.stage, d.reason) for d in _dead(backbone)] == [
        ("ingest-refs", "bad_mode"),
        ("ingest-refs", "bad_prompt"),
    ]
    assert repr(mode) in _dead(backbone)[0].detail
    assert fetched == [str(doc)]  # the bad records were refused before their files were read
    assert len(_submitted(backbone)) == 1
