"""Tracing, metrics and structured logs for the pipeline services.

* Tracing: one trace per document. Ingest opens the document span; every record carries the
  W3C ``traceparent``/``tracestate`` in its Kafka headers; each stage opens its span (per page)
  as a child of the context it received and injects its own context into what it publishes, so a
  page's rasterize -> encode -> decode -> assemble spans share the document's trace id across hops.
  OTLP/HTTP export when ``OCRSTREAM_OTLP_ENDPOINT`` is set; tests pass an in-memory exporter.
* Metrics: a Prometheus registry per ``Telemetry`` (stage latency, pages, cache hits, consumer
  lag, dead letters, decode outcomes), served on /metrics.
* Logs: JSON lines carrying ``trace_id``/``span_id`` of the current span.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ocrstream.bus.base import Headers

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = ("traceparent", "tracestate")


def tracer_provider(
    service: str, otlp_endpoint: str = "", exporter: SpanExporter | None = None
) -> TracerProvider:
    """A provider for ``service``: OTLP/HTTP batch export if an endpoint is given, and/or ``exporter``
    (synchronous, for tests)."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"ocrstream-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def inject(headers: Headers | None = None, ctx: otel_context.Context | None = None) -> Headers:
    """Headers with the W3C trace context of ``ctx`` (default: current) replacing any old one."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    out = [(k, v) for k, v in (headers or []) if k not in _TRACE_HEADERS]
    out.extend((k, v.encode()) for k, v in carrier.items())
    return out


def extract(headers: Headers | None) -> otel_context.Context:
    carrier = {k: v.decode("latin-1") for k, v in (headers or []) if k in _TRACE_HEADERS}
    return _PROPAGATOR.extract(carrier)


class Telemetry:
    """Tracer + metrics of one process (shared by every service in embedded mode)."""

    def __init__(self, service: str, provider: TracerProvider | None = None) -> None:
        self.service = service
        self.provider = provider or tracer_provider(service)
        self.tracer = self.provider.get_tracer("ocrstream")
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "ocrstream_stage_seconds",
            "time spent in a pipeline stage per record or batch",
            ["stage"],
            registry=r,
            buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.pages = Counter(
            "ocrstream_pages", "pages processed by stage (rate = pages/s)", ["stage"], registry=r
        )
        self.cache = Counter("ocrstream_token_cache", "vision-token cache lookups", ["result"], registry=r)
        self.consumer_lag = Gauge(
            "ocrstream_consumer_lag",
            "records behind the log end",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.dead_letters = Counter(
            "ocrstream_dead_letters", "dead-lettered records", ["stage", "reason"], registry=r
        )
        self.decoded = Counter(
            "ocrstream_decoded_pages", "decoded pages by final method", ["method"], registry=r
        )
        self.encoder_calls = Counter(
            "ocrstream_encoder_calls", "pages run through the vision encoder", registry=r
        )

    @contextmanager
    def span(
        self, name: str, parent: otel_context.Context | None = None, **attrs: Any
    ) -> Iterator[trace.Span]:
        with self.tracer.start_as_current_span(name, context=parent, attributes=_attrs(attrs)) as sp:
            yield sp

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(stage).observe(time.perf_counter() - t0)

    def cache_hit_ratio(self) -> float:
        hits = self.cache.labels("hit")._value.get()
        misses = self.cache.labels("miss")._value.get()
        return hits / (hits + misses) if hits + misses else 0.0

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.force_flush()
        self.provider.shutdown()


def _attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {f"ocrstream.{k}": v for k, v in attrs.items() if isinstance(v, str | int | float | bool)}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the current trace and span ids."""

    def format(self, record: logging.LogRecord) -> str:
        ctx = trace.get_current_span().get_span_context()
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if ctx.is_valid:
            out["trace_id"] = format(ctx.trace_id, "032x")
            out["span_id"] = format(ctx.span_id, "016x")
        for k in ("doc_id", "job_id", "page", "stage"):
            if hasattr(record, k):
                out[k] = getattr(record, k)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(fmt: str = "json", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonLogFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
