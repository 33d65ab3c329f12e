"""Builds the pieces a service needs from config: bus, store, cache, telemetry, handlers, model.

Service ``main.py`` files and the embedded pipeline both call these, so the embedded mode is the
same services wired with the in-memory bus, local store and in-process cache.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from ocrstream.bus.base import Bus
from ocrstream.cache.base import Cache
from ocrstream.cache.memory import MemoryCache
from ocrstream.cache.tiers import TokenTiers
from ocrstream.config import (
    AssemblerConfig,
    CommonConfig,
    DecoderConfig,
    EncoderConfig,
    RasterizerConfig,
    TopicsConfig,
    WorkerConfig,
)
from ocrstream.errors import TransientError
from ocrstream.guard import DecodeSettings
from ocrstream.messages import MESSAGE_TYPES, topic
from ocrstream.raster import Limits
from ocrstream.services.assembler.handler import AssemblerHandler
from ocrstream.services.decoder.handler import DecoderHandler
from ocrstream.services.encoder.handler import EncoderHandler
from ocrstream.services.rasterizer.handler import RasterizerHandler
from ocrstream.services.runtime import Handler, Worker
from ocrstream.store.base import Store
from ocrstream.store.local import LocalStore
from ocrstream.telemetry import Telemetry, tracer_provider

log = logging.getLogger(__name__)

SERVICES = ("ingest", "rasterizer", "encoder", "decoder", "assembler")


@dataclass
class Backbone:
    common: CommonConfig
    bus: Bus
    store: Store
    cache: Cache
    telemetry: Telemetry


def build_store(common: CommonConfig) -> Store:
    if common.store == "local":
        return LocalStore(common.store_dir)
    if common.store == "s3":
        from ocrstream.store.s3 import S3Store

        access, secret = common.s3_credentials()  # fails fast: no default credentials
        return S3Store(common.s3_endpoint, access, secret, common.s3_bucket, common.s3_secure)
    raise ValueError(f"OCRSTREAM_STORE={common.store!r}: expected s3 or local")


def build_cache(common: CommonConfig, enc: EncoderConfig | None = None) -> Cache:
    if common.cache == "memory":
        return MemoryCache()
    if common.cache == "redis":
        from ocrstream.cache.redis import RedisCache

        cache = RedisCache(common.redis_url, common.redis_key_prefix)
        if enc is not None:
            try:
                cache.check_policy(enc.redis_maxmemory_policy)
            except TransientError as exc:
                # Redis down at start: the cache is optional (tokens live in the store), so serve
                # without it rather than crash-loop until it is back; the check is only advisory.
                log.warning("redis unavailable at start (%s): serving from the store until it is back", exc)
        return cache
    raise ValueError(f"OCRSTREAM_CACHE={common.cache!r}: expected redis or memory")


def build_backbone(
    service: str, common: CommonConfig, bus: Bus | None = None, exporter: SpanExporter | None = None
) -> Backbone:
    if bus is None:
        from ocrstream.bus.kafka import KafkaBus

        bus = KafkaBus(common.kafka_bootstrap, client_id=f"ocrstream-{service}")
    telemetry = Telemetry(service, tracer_provider(service, common.otlp_endpoint, exporter))
    enc = EncoderConfig.from_env() if service in ("encoder", "decoder") else None
    return Backbone(common, bus, build_store(common), build_cache(common, enc), telemetry)


def all_topics(prefix: str) -> list[str]:
    return [topic(t, prefix) for t in MESSAGE_TYPES]


def topic_layout(prefix: str, cfg: TopicsConfig) -> dict[str, int]:
    """Every pipeline topic's full name -> its configured partition count."""
    return cfg.layout(prefix, tuple(t.TOPIC for t in MESSAGE_TYPES))


class TopicGate:
    """Keeps a service unready until its topics exist (it never creates them); ``detail`` says why."""

    def __init__(self, bus: Bus, topics: list[str]) -> None:
        self.bus, self.topics = bus, list(topics)
        self.missing: list[str] = []
        self.error = ""
        self.ok = False

    def check(self) -> bool:
        probe = getattr(self.bus, "missing_topics", None)
        if probe is None:  # the in-memory bus makes topics on first use
            self.ok = True
            return True
        try:
            self.missing, self.error = probe(self.topics), ""
        except TransientError as exc:
            self.missing, self.error = [], str(exc)
        self.ok = not self.missing and not self.error
        return self.ok

    def detail(self) -> str:
        if self.error:
            return f"cannot check the Kafka topics: {self.error}"
        if self.missing:
            return (
                f"missing Kafka topics {', '.join(self.missing)}: services do not create topics; run "
                "`ocrstream topics create` (or the chart's topics Job)"
            )
        return ""

    def wait(self, stop: threading.Event, interval_s: float) -> bool:
        """Check until the topics exist (True) or ``stop`` is set (False), logging each new reason."""
        said = ""
        while not stop.is_set():
            if self.check():
                if said:
                    log.info("topics present: %s", ", ".join(self.topics))
                return True
            if self.detail() != said:
                said = self.detail()
                log.error("not ready: %s; re-checking every %.0fs", said, interval_s)
            stop.wait(interval_s)
        return False


def load_model(common: CommonConfig) -> Any:
    from ocrstream.backends.inprocess import load_model as _load

    return _load(common.checkpoint_dir, common.device, common.dtype)


def build_handler(
    service: str,
    bb: Backbone,
    model: Any = None,
    env: Mapping[str, str] | None = None,
    decoder_cfg: DecoderConfig | None = None,
    encoder: Any = None,
) -> Handler:
    """The pure step of ``service``; ``model`` is an OcrModel for encoder/decoder (in-process).
    Pass one ``encoder`` (InProcessEncoder) to share it, and its call count, between services."""
    from ocrstream.backends import build_decoder_backend
    from ocrstream.backends.inprocess import InProcessEncoder

    if service == "rasterizer":
        return RasterizerHandler(bb.store, bb.telemetry, Limits.from_config(RasterizerConfig.from_env(env)))
    if service == "encoder":
        e = EncoderConfig.from_env(env)
        return EncoderHandler(
            encoder or InProcessEncoder(model),
            bb.cache,
            bb.store,
            bb.telemetry,
            e.cache_ttl_s,
            bb.common.checkpoint_dir,
        )
    if service == "decoder":
        d = decoder_cfg or DecoderConfig.from_env(env)
        e = EncoderConfig.from_env(env)
        tiers = TokenTiers(bb.cache, bb.store, bb.telemetry, e.cache_ttl_s)
        backend = build_decoder_backend(d.backend, model=model, triton_url=d.triton_url)
        if encoder is None and model is not None and d.backend == "inprocess":
            encoder = InProcessEncoder(model)
        settings = DecodeSettings.from_config(d)
        return DecoderHandler(
            backend, tiers, bb.store, bb.telemetry, settings, encoder, bb.common.checkpoint_dir
        )
    if service == "assembler":
        a = AssemblerConfig.from_env(env)
        return AssemblerHandler(bb.store, bb.telemetry, a.degraded_rate)
    raise ValueError(f"no consumer handler for service {service!r} (one of {', '.join(SERVICES[1:])})")


def build_worker(
    service: str,
    bb: Backbone,
    handler: Handler,
    env: Mapping[str, str] | None = None,
    group: str | None = None,
) -> Worker:
    cfg = WorkerConfig.for_service(service, env)
    return Worker(handler, bb.bus, bb.telemetry, cfg, bb.common.topic_prefix, group=group)
