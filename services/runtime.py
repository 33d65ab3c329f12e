"""The consumer loop every service runs: poll a micro-batch, handle, publish, flush, commit.

* At-least-once: offsets are committed only after every output of the polled records was
  published and flushed (and the handlers' store writes are done); a crash before that replays
  the records, and handlers are idempotent on (doc id, page, stage).
* Errors: a ``PermanentError`` dead-letters the record with its reason (and lets the handler mark
  the job); a ``TransientError`` retries the record with exponential backoff, without limit while
  the service runs (a dependency outage must not drop documents); any other exception is a bug or a
  poison record: retried ``max_retries`` times, then dead-lettered with reason ``poison``.
* Tracing: each record gets a span, child of the trace context in its headers; outputs carry the
  span's context.
* Shutdown: ``stop`` (SIGTERM) ends polling; the batch in hand is finished and committed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from opentelemetry import trace

from ocrstream.bus.base import Bus, Producer, Record
from ocrstream.config import WorkerConfig
from ocrstream.errors import InvalidMessage, PermanentError, TransientError
from ocrstream.messages import DeadLetter, Message, topic
from ocrstream.telemetry import Telemetry, extract, inject

log = logging.getLogger(__name__)

Outcome = list[Message] | Exception


class Handler(Protocol):
    stage: str
    input_type: type[Message]

    def handle_batch(self, msgs: list[Message], spans: list[trace.Span] | None = None) -> list[Outcome]:
        """One outcome per input: the messages to publish, or the exception it failed with.
        ``spans`` are the records' spans (per-record work may run under them)."""

    def on_permanent(self, msg: Message, err: PermanentError) -> list[Message]:
        """Messages to publish when ``msg`` is dead-lettered (e.g. a failed DocumentCompleted)."""


class SimpleHandler:
    """Base for handlers that process one record at a time."""

    stage = ""
    input_type: type[Message] = Message

    def handle(self, msg: Message) -> list[Message]:
        raise NotImplementedError

    def handle_batch(self, msgs: list[Message], spans: list[trace.Span] | None = None) -> list[Outcome]:
        out: list[Outcome] = []
        for i, m in enumerate(msgs):
            # The record's span is current while it is handled: child spans and log lines join its trace.
            span = spans[i] if spans else trace.INVALID_SPAN
            with trace.use_span(span, end_on_exit=False):
                try:
                    out.append(self.handle(m))
                except Exception as exc:  # noqa: BLE001 - classified by the worker
                    out.append(exc)
        return out

    def on_permanent(self, msg: Message, err: PermanentError) -> list[Message]:
        return []


@dataclass
class _Item:
    record: Record
    msg: Message
    span: trace.Span
    attempts: int = 0


class Worker:
    def __init__(
        self,
        handler: Handler,
        bus: Bus,
        telemetry: Telemetry,
        cfg: WorkerConfig,
        topic_prefix: str,
        group: str | None = None,
    ) -> None:
        self.handler = handler
        self.stage = handler.stage
        self.telemetry = telemetry
        self.cfg = cfg
        self.prefix = topic_prefix
        self.in_topic = topic(handler.input_type, topic_prefix)
        self.group = group or f"{topic_prefix}{handler.stage}"
        self.producer = bus.producer()
        self.consumer = bus.consumer([self.in_topic], self.group)
        self.stop_event = threading.Event()
        self.processed = 0
        self._last_lag = 0.0

    # ---- loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Poll until ``stop()``; then finish the batch in hand, commit and close."""
        log.info("%s consuming %s as group %s", self.stage, self.in_topic, self.group)
        try:
            while not self.stop_event.is_set():
                try:
                    self.run_once(timeout_s=1.0)
                except TransientError as exc:
                    # Poll/commit failed (broker down): nothing was committed, wait and retry.
                    log.warning("%s: %s; retrying", self.stage, exc)
                    self.stop_event.wait(self.cfg.backoff_s)
        finally:
            self.close()

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        for closer in (self.producer.close, self.consumer.close):
            try:
                closer()
            except TransientError as exc:
                log.warning("%s: close: %s", self.stage, exc)

    def run_once(self, timeout_s: float = 0.0) -> int:
        """Process one micro-batch; returns the number of records consumed (0 = idle)."""
        records = self._poll(timeout_s)
        if not records:
            self._update_lag()
            return 0
        items = [it for it in (self._parse(r) for r in records) if it is not None]
        with self.telemetry.timed(self.stage):
            self._process(items)
        self.producer.flush()
        self.consumer.commit()
        self.processed += len(records)
        self._update_lag()
        return len(records)

    def _poll(self, timeout_s: float) -> list[Record]:
        records = self.consumer.poll(self.cfg.max_batch, timeout_s)
        if records and len(records) < self.cfg.max_batch and self.cfg.max_wait_ms > 0:
            # Micro-batching: wait briefly for the batch to fill.
            deadline = time.monotonic() + self.cfg.max_wait_ms / 1000
            while len(records) < self.cfg.max_batch and (left := deadline - time.monotonic()) > 0:
                more = self.consumer.poll(self.cfg.max_batch - len(records), left)
                if not more:
                    break
                records.extend(more)
        return records

    def _parse(self, rec: Record) -> _Item | None:
        try:
            msg = self.handler.input_type.from_bytes(rec.value, rec.headers)
        except InvalidMessage as exc:
            self._dead_letter(rec, None, exc)
            return None
        attrs = {
            "ocrstream.doc_id": getattr(msg, "doc_id", ""),
            "ocrstream.job_id": getattr(msg, "job_id", ""),
        }
        if getattr(msg, "page", 0):
            attrs["ocrstream.page"] = msg.page
        name = f"{self.stage} page {msg.page}" if getattr(msg, "page", 0) else self.stage
        span = self.telemetry.tracer.start_span(name, context=extract(rec.headers), attributes=attrs)
        return _Item(rec, msg, span)

    def _process(self, items: list[_Item]) -> None:
        pending = items
        delay = self.cfg.backoff_s
        while pending:
            # A batch span linked to every record's span: batched model calls belong to many traces.
            links = [trace.Link(it.span.get_span_context()) for it in pending]
            with self.telemetry.tracer.start_as_current_span(
                f"{self.stage} batch", links=links
            ) as batch_span:
                batch_span.set_attribute("ocrstream.records", len(pending))
                try:
                    outcomes = self.handler.handle_batch(
                        [it.msg for it in pending], [it.span for it in pending]
                    )
                except Exception as exc:  # noqa: BLE001 - a batch-level failure applies to every record
                    outcomes = [exc] * len(pending)
            retry: list[_Item] = []
            for it, outcome in zip(pending, outcomes, strict=True):
                if isinstance(outcome, PermanentError):
                    self._dead_letter(it.record, it, outcome)
                elif isinstance(outcome, TransientError):
                    retry.append(it)
                    log.warning("%s: transient failure on %s: %s", self.stage, it.record.key, outcome)
                elif isinstance(outcome, Exception):
                    it.attempts += 1
                    log.error(
                        "%s: error on %s (attempt %d)",
                        self.stage,
                        it.record.key,
                        it.attempts,
                        exc_info=outcome,
                    )
                    if it.attempts >= self.cfg.max_retries:
                        self._dead_letter(it.record, it, PermanentError(f"{outcome!r}", reason="poison"))
                    else:
                        retry.append(it)
                else:
                    self._publish(outcome, it.span)
                    it.span.end()
                    self.telemetry.pages.labels(self.stage).inc()
            pending = retry
            if pending:
                if self.stop_event.is_set() and all(it.attempts == 0 for it in pending):
                    # Shutting down during an outage: leave them uncommitted for the next run.
                    raise TransientError(f"{self.stage}: stopping with {len(pending)} records unprocessed")
                self.stop_event.wait(delay)
                delay = min(delay * 2, self.cfg.backoff_max_s)

    def _publish(self, msgs: list[Message], span: trace.Span | None) -> None:
        publish_messages(self.producer, self.prefix, msgs, span)

    def _dead_letter(self, rec: Record, item: _Item | None, err: PermanentError) -> None:
        msg = item.msg if item else None
        dl = DeadLetter(
            stage=self.stage,
            reason=err.reason,
            detail=str(err)[:2000],
            original_topic=rec.topic,
            original_key=rec.key,
            original_value=rec.value[:4000].decode("utf-8", "replace"),
            job_id=getattr(msg, "job_id", ""),
            doc_id=getattr(msg, "doc_id", ""),
            page=getattr(msg, "page", 0),
        )
        log.warning("%s: dead-letter %s (%s): %s", self.stage, rec.key, err.reason, err)
        self.telemetry.dead_letters.labels(self.stage, err.reason).inc()
        extra: list[Message] = []
        if msg is not None:
            try:
                extra = self.handler.on_permanent(msg, err)
            except Exception:  # noqa: BLE001 - the dead letter itself must still go out
                log.exception("%s: on_permanent failed for %s", self.stage, rec.key)
        span = item.span if item else None
        if span is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, err.reason))
        self._publish([dl, *extra], span)
        if span is not None:
            span.end()

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < 5.0:
            return
        self._last_lag = now
        try:
            for (t, p), lag in self.consumer.lag().items():
                self.telemetry.consumer_lag.labels(self.group, t, str(p)).set(lag)
        except TransientError as exc:
            log.debug("lag unavailable: %s", exc)


def publish_messages(producer: Producer, prefix: str, msgs: list[Message], span: trace.Span | None) -> None:
    """Publish typed messages keyed by doc id, with schema headers and ``span``'s trace context."""
    ctx = trace.set_span_in_context(span) if span is not None else None
    for m in msgs:
        producer.publish(topic(type(m), prefix), m.key, m.to_bytes(), inject(m.headers(), ctx))


# ---- process plumbing (used by services/<name>/main.py) ----------------------------------------


def install_signal_handlers(stop: Callable[[], None]) -> None:
    """SIGTERM/SIGINT stop polling; the loop then drains, commits and returns (exit 0)."""

    def _handler(signum: int, _frame: object) -> None:
        log.info("signal %d: draining", signum)
        stop()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


class HealthServer:
    """/healthz (process alive), /readyz (consumer assigned / dependencies up), /metrics."""

    def __init__(
        self,
        host: str,
        port: int,
        telemetry: Telemetry,
        ready: Callable[[], bool],
        detail: Callable[[], str] = lambda: "",
    ) -> None:
        """``detail``: why the service is not ready (appended to the 503 body)."""
        tel = telemetry

        class _H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if self.path == "/healthz":
                    self._send(200, b"ok\n", "text/plain")
                elif self.path == "/readyz":
                    if _safe(ready):
                        self._send(200, b"ready\n", "text/plain")
                    else:
                        why = detail()
                        self._send(503, f"not ready{': ' + why if why else ''}\n".encode(), "text/plain")
                elif self.path == "/metrics":
                    self._send(200, tel.metrics_text(), "text/plain; version=0.0.4")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), _H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _safe(fn: Callable[[], bool]) -> bool:
    try:
        return bool(fn())
    except Exception:  # noqa: BLE001 - a failing readiness probe is "not ready"
        return False
