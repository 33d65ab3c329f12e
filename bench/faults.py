"""Fault suite: pages through the streaming pipeline's service processes over real Kafka, Redis and
S3 while workers are SIGKILLed and Redis is stopped; then every page must be in the results
exactly once (0 lost, 0 duplicated).

    .venv/bin/python bench/faults.py                      # 1,000 pages, Redis down 20 s
    .venv/bin/python bench/faults.py --pages 200 --redis-down-s 5 --kill-in-outage

The shape (all on 127.0.0.1):

* a **private** ``redis-server`` on a free port (the binary ``scripts/infra/redis.sh`` installs),
  so stopping it does not disturb the shared dev Redis; no persistence, so it comes back empty;
* the dev Kafka broker and S3 server with names of this run alone (topic prefix, consumer groups,
  Redis key prefix, bucket); topics made up front with ``--partitions`` partitions (services never
  create topics);
* the stages as service processes (``python -m ocrstream.services.<stage>.main``, the deployed
  shape): one rasterizer, ``--encoders``, ``--decoders`` and ``--assemblers`` replicas, on a tiny
  random-weight model saved as a checkpoint folder (greedy, ``--max-new-tokens`` per page, 1 by
  default: no page passes the output guard, so every page ends on its PDF text layer, which is
  text the check can compare with what the page says);
* faults, each at a random moment of its stage's progress: one encoder and one decoder replica
  SIGKILLed (one caught using CPU when there is one, so likely mid-batch: its uncommitted records
  are redelivered to the group) and restarted by the harness as Kubernetes would, Redis stopped for ``--redis-down-s`` and started again.
  ``--kill-in-outage`` puts the decoder's kill inside the outage, so its restart meets no Redis.
  And ``--replay`` (5%) of the pages' PageDecoded records published a second time, byte for byte,
  at a random moment (duplicates as a producer retry or an offset reset makes them).
  Any other exit of a worker is counted as a crash (and it is restarted with back-off).

The check reads the store (status, ``result.json``, the page objects, ``result.md``) and the
``document.completed`` topic: a page missing from its job's result is lost; a page twice, or a
second completion of a job, is duplicated; a page whose text is not its own is wrong. The numbers
printed: pages, kills, restarts, crashes, Redis downtime, redelivered decodes, lost, duplicated,
wrong, wall time. Exit status 0 when nothing was lost, duplicated or wrong and no worker crashed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("rasterizer", "encoder", "decoder", "assembler")
ARMED_GRACE_S = 5.0  # a kill due waits this long for a replica caught working, then takes any


@dataclass
class Plan:
    pages: int = 1000
    encoders: int = 2
    decoders: int = 2
    assemblers: int = 2
    partitions: int = 4
    redis_down_s: float = 20.0
    kill_in_outage: bool = False  # the decoder's kill lands inside the Redis outage
    replay: float = 0.05  # share of pages whose PageDecoded the harness publishes again (a replay)
    max_pages_per_doc: int = 8
    max_new_tokens: int = 1  # no page can pass the guard: every page ends on its text layer
    seed: int | None = None
    timeout_s: float = 1800.0
    restart_delay_s: float = 0.5  # a killed worker is started again after this (kubelet: ~immediately)


@dataclass
class Endpoints:
    kafka: str
    s3: str
    s3_access_key: str
    s3_secret_key: str
    bucket: str = ""  # empty: a bucket of this run, removed at the end


@dataclass
class Report:
    pages: int
    docs: int
    workers: dict[str, int]
    kills: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    crashes: list[str] = field(default_factory=list)
    redis_down_s: float = 0.0
    decoded_records: int = 0  # PageDecoded records seen: pages + injected replays + replays after kills
    replayed: int = 0  # PageDecoded records the harness published a second time
    jobs_finished: int = 0
    lost: int = 0
    duplicated: int = 0
    duplicate_completions: int = 0
    missing_completions: int = 0
    wrong_text: int = 0
    model_pages: int = 0  # pages the random model "read" (EOS by chance): text not comparable
    dead_letters: list[str] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return (
            not self.timed_out
            and self.lost == self.duplicated == self.duplicate_completions == self.missing_completions == 0
            and self.wrong_text == 0
            and not self.crashes
            and not self.dead_letters
            and all(rc == 0 for rc in self.exit_codes.values())
        )

    def lines(self) -> list[str]:
        w = ", ".join(f"{n} {s}" for s, n in self.workers.items())
        k = ", ".join(f"{n} {s}" for s, n in self.kills.items()) or "none"
        return [
            f"pages                 {self.pages} in {self.docs} documents ({w})",
            f"SIGKILLs              {k}; restarts {self.restarts}; crashes {len(self.crashes)}",
            f"redis down            {self.redis_down_s:.1f} s (stopped, then started empty)",
            f"PageDecoded records   {self.decoded_records}: {self.replayed} replayed by the harness, "
            f"{self.decoded_records - self.pages - self.replayed} republished after kills",
            f"jobs finished         {self.jobs_finished} of {self.docs}",
            f"lost pages            {self.lost}",
            f"duplicated pages      {self.duplicated}",
            f"duplicate completions {self.duplicate_completions}; missing completion events {self.missing_completions}",
            f"wrong page text       {self.wrong_text} (model-read pages, not comparable: {self.model_pages})",
            f"dead letters          {len(self.dead_letters)}",
            f"worker exit codes     {sorted(set(self.exit_codes.values()))} on SIGTERM",
            f"wall time             {self.wall_s:.1f} s ({self.pages / max(self.wall_s, 1e-9):.1f} pages/s)"
            + (" TIMED OUT" if self.timed_out else ""),
            f"verdict               {'OK: every page exactly once' if self.ok else 'FAILED'}",
            *[f"  crash: {c}" for c in self.crashes[:5]],
            *[f"  dead letter: {d}" for d in self.dead_letters[:5]],
        ]


# ---- documents ---------------------------------------------------------------------------------


def page_text(doc: int, page: int, rng: random.Random) -> str:
    words = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 7))) for _ in range(3))
    return f"d{doc:04d} p{page:03d} {words}"


def make_pdf(texts: list[str]) -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=(216, 144))  # 3 x 2 in: 432 x 288 px at 144 dpi
    for t in texts:
        c.setFont("Helvetica", 10)
        c.drawString(12, 70, t)
        c.showPage()
    c.save()
    return buf.getvalue()


def make_documents(n_pages: int, max_per_doc: int, rng: random.Random) -> list[list[str]]:
    docs: list[list[str]] = []
    left = n_pages
    while left:
        n = min(left, rng.randint(1, max_per_doc))
        docs.append([page_text(len(docs), p, rng) for p in range(1, n + 1)])
        left -= n
    return docs


def make_tiny_checkpoint(folder: Path, seed: int) -> Path:
    """The tests' tiny random-weight model as a checkpoint folder the services load."""
    import torch

    from ocrstream.model.weights import save_snapshot
    from tests.tiny import tiny_ocr_model

    torch.manual_seed(seed)
    model = tiny_ocr_model()
    folder.mkdir(parents=True, exist_ok=True)
    save_snapshot(model.model, folder)
    model.tokenizer.tok.save(str(folder / "tokenizer.json"))
    return folder


# ---- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


BUSY_TICKS = 3  # CPU ticks (1/100 s) within one look of the harness loop: the replica is working


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


class PrivateRedis:
    """A redis-server of this run alone; ``stop``/``start`` keep its port."""

    def __init__(self, workdir: Path) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server not found: run `bash scripts/infra/redis.sh install`")
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 30.0) -> None:
        import redis

        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--protected-mode", "yes"]
            + ["--daemonize", "no", "--save", "", "--appendonly", "no", "--dir", str(self.dir)]
            + ["--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru", "--loglevel", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"private redis on port {self.port} did not answer in {timeout_s}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None


@dataclass
class Proc:
    stage: str
    index: int
    port: int
    popen: subprocess.Popen | None = None
    killed: bool = False  # by the harness: its exit is expected
    restart_at: float = 0.0
    backoff_s: float = 1.0
    starts: int = 0
    ticks: int = 0  # CPU clock ticks at the last look

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.index}"

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Cluster:
    """The service processes, supervised: a killed one is restarted, a crash is recorded."""

    def __init__(self, plan: Plan, env: dict[str, str], logdir: Path) -> None:
        self.plan, self.env, self.logdir = plan, env, logdir
        counts = {"rasterizer": 1, "encoder": plan.encoders, "decoder": plan.decoders}
        counts["assembler"] = plan.assemblers
        self.procs = [Proc(s, i, free_port()) for s in STAGES for i in range(counts[s])]
        self.crashes: list[str] = []
        self.restarts = 0
        self.kills: Counter[str] = Counter()
        self.stopping = False

    def _spawn(self, p: Proc) -> None:
        key = p.stage.upper()
        env = {
            **self.env,
            f"OCRSTREAM_{key}_METRICS_PORT": str(p.port),
            f"OCRSTREAM_{key}_METRICS_HOST": "127.0.0.1",
        }
        log = open(self.logdir / f"{p.name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        p.popen = subprocess.Popen(
            [sys.executable, "-m", f"ocrstream.services.{p.stage}.main"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        p.killed, p.starts = False, p.starts + 1

    def start(self) -> None:
        for p in self.procs:
            self._spawn(p)

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = list(self.procs)
        while pending and time.monotonic() < deadline:
            self.supervise()
            pending = [p for p in pending if not _http_ok(f"http://127.0.0.1:{p.port}/readyz")]
            time.sleep(0.3)
        if pending:
            raise RuntimeError(
                f"not ready in {timeout_s:.0f}s: {[p.name for p in pending]}; logs in {self.logdir}"
            )

    def busy(self, stage: str) -> list[Proc]:
        """Replicas of ``stage`` that used CPU since the last call (likely inside a batch)."""
        out = []
        for p in self.procs:
            if p.stage != stage or not p.alive:
                continue
            ticks = _cpu_ticks(p.popen.pid)  # type: ignore[union-attr]
            if p.ticks and ticks - p.ticks >= BUSY_TICKS:
                out.append(p)
            p.ticks = ticks
        return out

    def kill(self, stage: str, rng: random.Random, prefer: list[Proc] | None = None) -> str | None:
        live = [p for p in (prefer or self.procs) if p.stage == stage and p.alive]
        if not live:
            return None
        p = rng.choice(live)
        p.killed = True
        assert p.popen is not None
        p.popen.send_signal(signal.SIGKILL)
        p.restart_at = time.monotonic() + self.plan.restart_delay_s
        p.ticks = 0
        self.kills[stage] += 1
        return p.name

    def supervise(self) -> None:
        """Restart what exited: a SIGKILL of ours after the restart delay, anything else (a crash)
        with doubling back-off, as a kubelet does."""
        now = time.monotonic()
        for p in self.procs:
            if self.stopping or p.popen is None or p.popen.poll() is None:
                continue
            if not p.killed and p.restart_at <= 0:
                tail = (self.logdir / f"{p.name}.log").read_text(errors="replace").strip().splitlines()[-3:]
                self.crashes.append(f"{p.name} exited {p.popen.returncode}: {' | '.join(tail)[-400:]}")
                p.restart_at = now + p.backoff_s
                p.backoff_s = min(p.backoff_s * 2, 30.0)
            if p.restart_at and now >= p.restart_at:
                p.restart_at = 0.0
                self._spawn(p)
                self.restarts += 1

    def stop(self, timeout_s: float = 90.0) -> dict[str, int]:
        self.stopping = True
        for p in self.procs:
            if p.alive:
                p.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        codes = {}
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            if p.popen is None:
                continue
            try:
                codes[p.name] = p.popen.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                codes[p.name] = p.popen.wait()
        return codes


class Observer(threading.Thread):
    """Reads the pipeline's output topics (its own consumer group): progress per stage, completion
    events per job, dead letters."""

    def __init__(self, bus, prefix: str) -> None:  # noqa: ANN001
        super().__init__(name="observer", daemon=True)
        from ocrstream.messages import DeadLetter, DocumentCompleted, PageDecoded, PageEncoded, topic

        self.types = {topic(t, prefix): t for t in (PageEncoded, PageDecoded, DocumentCompleted, DeadLetter)}
        self.consumer = bus.consumer(list(self.types), f"{prefix}observer")
        self.encoded: set[tuple[str, int]] = set()
        self.decoded: set[tuple[str, int]] = set()
        self.decoded_records = 0
        self.decoded_raw: list = []  # (topic, key, value, headers) of every PageDecoded seen
        self.completions: Counter[str] = Counter()
        self.dead_letters: list[str] = []
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        from ocrstream.messages import DeadLetter, DocumentCompleted, PageDecoded, PageEncoded

        while not self.halt.is_set():
            try:
                records = self.consumer.poll(500, 0.5)
            except Exception:  # noqa: BLE001 - a broker hiccup: poll again
                time.sleep(0.5)
                continue
            with self.lock:
                for r in records:
                    m = self.types[r.topic].from_bytes(r.value, r.headers)
                    if isinstance(m, PageEncoded):
                        self.encoded.add((m.job_id, m.page))
                    elif isinstance(m, PageDecoded):
                        self.decoded.add((m.job_id, m.page))
                        self.decoded_records += 1
                        self.decoded_raw.append((r.topic, r.key, r.value, r.headers))
                    elif isinstance(m, DocumentCompleted):
                        self.completions[m.job_id] += 1
                    elif isinstance(m, DeadLetter):
                        self.dead_letters.append(
                            f"{m.stage} {m.reason} {m.job_id} p{m.page}: {m.detail[:200]}"
                        )
        self.consumer.close()


# ---- the run -----------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(text.split())


def verify(store, jobs: dict[str, list[str]], completions: Counter[str], rep: Report) -> None:  # noqa: ANN001
    """Every page of every job exactly once in its results, with its own text."""
    from ocrstream import layout
    from ocrstream.errors import NotFound
    from ocrstream.store.base import get_json

    for job, texts in jobs.items():
        n = len(texts)
        try:
            status = layout.Jobs(store).get(job)["status"]
            result = get_json(store, layout.result_key(job)) if status in layout.TERMINAL else None
        except NotFound:
            status, result = "missing", None
        if result is None:
            rep.lost += n
            continue
        rep.jobs_finished += 1
        seen = Counter(p["page"] for p in result["pages"])
        rep.lost += sum(1 for p in range(1, n + 1) if seen[p] == 0)
        rep.duplicated += sum(c - 1 for c in seen.values() if c > 1) + sum(
            c for p, c in seen.items() if not 1 <= p <= n
        )
        for p in result["pages"]:
            if not 1 <= p["page"] <= n:
                continue
            if p["method"] == "text_layer":
                rep.wrong_text += _norm(p["text"]) != _norm(texts[p["page"] - 1])
            else:
                rep.model_pages += 1
        md = store.get(layout.markdown_key(job)).decode()
        for p in range(1, n + 1):
            c = md.count(f"<!-- page {p} -->")
            rep.lost += c == 0 and seen[p] > 0  # in the JSON but not in the markdown
            rep.duplicated += max(0, c - 1)
        objects = [layout.page_of_result_key(k) for k in store.list(layout.page_result_prefix(job))]
        rep.duplicated += len(objects) - len(set(objects))
        got = completions.get(job, 0)
        rep.duplicate_completions += max(0, got - 1)
        rep.missing_completions += got == 0


def run(plan: Plan, ep: Endpoints, workdir: Path, say=print) -> Report:  # noqa: ANN001, C901, PLR0915
    from ocrstream.bus.kafka import KafkaBus, create_topics
    from ocrstream.services.ingest.handler import Ingestor
    from ocrstream.services.runtime import publish_messages
    from ocrstream.services.wiring import all_topics
    from ocrstream.store.s3 import S3Store
    from ocrstream.telemetry import Telemetry

    seed = plan.seed if plan.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    uid = uuid.uuid4().hex[:10]
    prefix = f"faults.{uid}."
    own_bucket = not ep.bucket
    bucket = ep.bucket or f"faults-{uid}"
    workdir.mkdir(parents=True, exist_ok=True)
    logdir = workdir / "logs"
    logdir.mkdir(exist_ok=True)
    say(f"fault run {uid}: seed {seed}, logs in {logdir}")

    docs = make_documents(plan.pages, plan.max_pages_per_doc, rng)
    ckpt = make_tiny_checkpoint(workdir / "model", seed)
    redis_srv = PrivateRedis(workdir)
    redis_srv.start()
    create_topics(ep.kafka, {t: plan.partitions for t in all_topics(prefix)}, 1)
    store = S3Store(ep.s3, ep.s3_access_key, ep.s3_secret_key, bucket)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OCRSTREAM_KAFKA_BOOTSTRAP": ep.kafka,
        "OCRSTREAM_TOPIC_PREFIX": prefix,
        "OCRSTREAM_REDIS_URL": redis_srv.url,
        "OCRSTREAM_REDIS_KEY_PREFIX": f"faults:{uid}:",
        "OCRSTREAM_CACHE": "redis",
        "OCRSTREAM_STORE": "s3",
        "OCRSTREAM_S3_ENDPOINT": ep.s3,
        "OCRSTREAM_S3_ACCESS_KEY": ep.s3_access_key,
        "OCRSTREAM_S3_SECRET_KEY": ep.s3_secret_key,
        "OCRSTREAM_S3_BUCKET": bucket,
        "OCRSTREAM_CHECKPOINT_DIR": str(ckpt),
        "OCRSTREAM_DEVICE": "cpu",
        "OCRSTREAM_LOG_FORMAT": "text",
        "OCRSTREAM_TOPICS_CHECK_INTERVAL_S": "1",
        "OCRSTREAM_DECODER_LADDER": "t=0.0",
        "OCRSTREAM_DECODER_MAX_NEW_TOKENS": str(plan.max_new_tokens),
        "OCRSTREAM_ASSEMBLER_DEGRADED_RATE": "1.0",  # text-layer pages are expected here
    }
    for s in STAGES:
        key = s.upper()
        env |= {
            f"OCRSTREAM_{key}_MAX_BATCH": "8",
            f"OCRSTREAM_{key}_MAX_WAIT_MS": "20",
            f"OCRSTREAM_{key}_BACKOFF_S": "0.2",
            f"OCRSTREAM_{key}_BACKOFF_MAX_S": "2.0",
        }
    cluster = Cluster(plan, env, logdir)
    workers = {s: sum(p.stage == s for p in cluster.procs) for s in STAGES}
    rep = Report(pages=plan.pages, docs=len(docs), workers=workers)
    bus = KafkaBus(ep.kafka, client_id=f"faults-{uid}")
    observer = Observer(bus, prefix)
    producer = bus.producer()
    down_since = 0.0
    replayed = 0
    try:
        cluster.start()
        cluster.wait_ready(timeout_s=300)
        observer.start()
        ingest = Ingestor(
            store,
            lambda msgs, span: publish_messages(producer, prefix, msgs, span),
            Telemetry("faults"),
            flush=producer.flush,
        )
        t0 = time.monotonic()
        jobs = {}
        for i, texts in enumerate(docs):
            jobs[ingest.submit(make_pdf(texts), f"doc{i:04d}.pdf").job_id] = texts
        say(f"submitted {plan.pages} pages in {len(docs)} documents in {time.monotonic() - t0:.1f}s")

        # Each fault at a random point of its stage's own progress (share of pages through it).
        enc_at, dec_at, redis_at = rng.uniform(0.1, 0.6), rng.uniform(0.1, 0.6), rng.uniform(0.15, 0.45)
        dec_kill_time = 0.0
        redis_state = "up"  # up -> down -> back
        next_store_check = 0.0
        armed: dict[str, float] = {}
        replay_at = rng.uniform(0.3, 0.8)
        deadline = t0 + plan.timeout_s
        while time.monotonic() < deadline:
            cluster.supervise()
            with observer.lock:
                enc_p, dec_p = len(observer.encoded) / plan.pages, len(observer.decoded) / plan.pages
                done = all(observer.completions.get(j) for j in jobs)
            now = time.monotonic()
            busy = {s: cluster.busy(s) for s in ("encoder", "decoder")}
            if not cluster.kills["encoder"] and enc_p >= enc_at:
                # Armed: kill a replica caught working (mid-batch), or any after a grace period.
                armed["encoder"] = armed.get("encoder") or now
                if busy["encoder"] or now - armed["encoder"] > ARMED_GRACE_S:
                    who = cluster.kill("encoder", rng, busy["encoder"])
                    say(f"{now - t0:6.1f}s SIGKILL {who} at {enc_p:.0%} encoded")
            if redis_state == "up" and dec_p >= redis_at:
                redis_srv.stop()
                down_since, redis_state = time.monotonic(), "down"
                say(f"{now - t0:6.1f}s redis stopped at {dec_p:.0%} decoded")
                if plan.kill_in_outage:
                    dec_kill_time = down_since + rng.uniform(0.2, min(1.0, plan.redis_down_s / 4))
            if redis_state == "down" and now - down_since >= plan.redis_down_s:
                redis_srv.start()
                rep.redis_down_s = time.monotonic() - down_since
                redis_state = "back"
                say(f"{now - t0:6.1f}s redis started again after {rep.redis_down_s:.1f}s")
            if plan.kill_in_outage:
                kill_dec = bool(dec_kill_time) and now >= dec_kill_time
            else:
                kill_dec = dec_p >= dec_at
            if not cluster.kills["decoder"] and kill_dec:
                armed["decoder"] = armed.get("decoder") or now
                grace = 0.5 if plan.kill_in_outage else ARMED_GRACE_S  # inside the outage, whatever it does
                if busy["decoder"] or now - armed["decoder"] > grace:
                    who = cluster.kill("decoder", rng, busy["decoder"])
                    say(f"{now - t0:6.1f}s SIGKILL {who} at {dec_p:.0%} decoded")
            if not done and now >= next_store_check:
                # A job whose completion event never came may still be finished in the store.
                next_store_check = now + 5.0
                with observer.lock:
                    waiting = [j for j in jobs if not observer.completions.get(j)]
                done = len(waiting) < len(jobs) / 10 and all(_finished(store, j) for j in waiting)
            if not replayed and plan.replay > 0 and dec_p >= replay_at:
                # Duplicates as a producer retry or an offset reset would make them: pages of
                # finished jobs and of jobs in flight, byte for byte, to the assemblers.
                with observer.lock:
                    sample = rng.sample(observer.decoded_raw, max(1, round(plan.replay * plan.pages)))
                for t, k, v, h in sample:
                    producer.publish(t, k, v, h)
                producer.flush()
                replayed = len(sample)
                say(f"{now - t0:6.1f}s replayed {replayed} PageDecoded records at {dec_p:.0%} decoded")
            faults_done = redis_state == "back" and cluster.kills["encoder"] and cluster.kills["decoder"]
            faults_done = faults_done and (replayed or plan.replay <= 0)
            if done and faults_done:
                break
            time.sleep(0.1)
        else:
            rep.timed_out = True
        rep.wall_s = time.monotonic() - t0
        if redis_state == "down":
            redis_srv.start()
            rep.redis_down_s = time.monotonic() - down_since
        time.sleep(3.0)  # late duplicates (a second completion) would show up by now
        cluster.supervise()
    finally:
        rep.exit_codes = cluster.stop()
        observer.halt.set()
        observer.join(timeout=30)
        producer.close()
        redis_srv.stop()
    rep.kills, rep.restarts, rep.crashes = dict(cluster.kills), cluster.restarts, list(cluster.crashes)
    rep.decoded_records = observer.decoded_records
    rep.replayed = replayed
    rep.dead_letters = list(observer.dead_letters)
    verify(store, jobs, observer.completions, rep)
    if own_bucket:
        _remove_bucket(store)
    return rep


def _finished(store, job: str) -> bool:  # noqa: ANN001
    from ocrstream import layout
    from ocrstream.errors import NotFound

    try:
        return layout.Jobs(store).get(job)["status"] in layout.TERMINAL
    except NotFound:
        return False


def _remove_bucket(store) -> None:  # noqa: ANN001
    from minio.deleteobjects import DeleteObject

    c, b = store.client, store.bucket
    names = [DeleteObject(o.object_name) for o in c.list_objects(b, recursive=True)]
    for i in range(0, len(names), 1000):
        for err in c.remove_objects(b, names[i : i + 1000]):
            print(f"cleanup: {err}", file=sys.stderr)
    c.remove_bucket(b)


def _dev_defaults() -> dict[str, str]:
    values = {}
    for line in (REPO / "scripts/infra/defaults.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            values[k] = os.environ.get(k) or v
    return values


def main(argv: list[str] | None = None) -> int:
    d = _dev_defaults()
    host = d["OCRSTREAM_DEV_HOST"]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--encoders", type=int, default=2)
    ap.add_argument("--decoders", type=int, default=2)
    ap.add_argument("--assemblers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--redis-down-s", type=float, default=20.0)
    ap.add_argument("--kill-in-outage", action="store_true", help="kill the decoder while Redis is down")
    ap.add_argument(
        "--replay", type=float, default=0.05, help="share of pages published twice to the assemblers"
    )
    ap.add_argument("--max-new-tokens", type=int, default=1)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--timeout-s", type=float, default=1800.0)
    ap.add_argument("--kafka", default=f"{host}:{d['OCRSTREAM_DEV_KAFKA_PORT']}")
    ap.add_argument("--s3", default=f"{host}:{d['OCRSTREAM_DEV_MINIO_PORT']}")
    ap.add_argument("--s3-access-key", default=d["OCRSTREAM_DEV_MINIO_ACCESS_KEY"])
    ap.add_argument("--s3-secret-key", default=d["OCRSTREAM_DEV_MINIO_SECRET_KEY"])
    ap.add_argument("--workdir", default="", help="logs, model, redis dir (default: a temp folder)")
    a = ap.parse_args(argv)
    plan = Plan(
        pages=a.pages,
        encoders=a.encoders,
        decoders=a.decoders,
        assemblers=a.assemblers,
        partitions=a.partitions,
        redis_down_s=a.redis_down_s,
        kill_in_outage=a.kill_in_outage,
        replay=a.replay,
        max_new_tokens=a.max_new_tokens,
        seed=a.seed,
        timeout_s=a.timeout_s,
    )
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="ocrstream-faults-"))
    rep = run(plan, Endpoints(a.kafka, a.s3, a.s3_access_key, a.s3_secret_key), workdir)
    print("\n".join(rep.lines()))
    print(json.dumps({k: v for k, v in rep.__dict__.items() if k not in ("crashes", "dead_letters")}))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
