"""Service settings: a frozen dataclass per service, every environment variable declared once.

Each field is read from ``OCRSTREAM_<SERVICE>_<FIELD>`` (e.g. ``OCRSTREAM_ENCODER_MAX_BATCH``);
settings shared by every service have their own fixed names (``OCRSTREAM_KAFKA_BOOTSTRAP``,
``OCRSTREAM_REDIS_URL``, ``OCRSTREAM_S3_*``, ``OCRSTREAM_OTLP_ENDPOINT``...). The ``OCRSTREAM_``
prefix dodges the ``<SVC>_PORT`` variables Kubernetes injects for every Service. Defaults are the
embedded / dev mode on 127.0.0.1. ``env_table()`` lists every variable with its default and doc
(docs/pipeline.md is generated from it).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

PREFIX = "OCRSTREAM_"


def _f(default: Any, doc: str, env: str | None = None) -> Any:
    """A config field; ``env`` overrides the derived ``OCRSTREAM_<SERVICE>_<FIELD>`` name."""
    return field(default=default, metadata={"doc": doc, "env": env})


def _cast(raw: str, typ: Any, name: str) -> Any:
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low not in {"1", "0", "true", "false", "yes", "no", "on", "off", ""}:
                raise ValueError(raw)
            return low in {"1", "true", "yes", "on"}
        if typ is int:
            return int(raw)
        if typ is float:
            return float(raw)
        if typ == tuple[str, ...]:
            return tuple(x.strip() for x in raw.split(",") if x.strip())
        return raw
    except ValueError as exc:
        raise ValueError(
            f"environment variable {name}={raw!r} is not a valid {getattr(typ, '__name__', typ)}"
        ) from exc


class _EnvConfig:
    SERVICE: str = ""

    @classmethod
    def env_name(cls, f: dataclasses.Field) -> str:
        return f.metadata.get("env") or f"{PREFIX}{cls.SERVICE.upper()}_{f.name.upper()}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any):
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            name = cls.env_name(f)
            if name in env:
                kw[f.name] = _cast(env[name], hints[f.name], name)
        kw.update(overrides)
        return cls(**kw)  # type: ignore[call-arg]


@dataclass(frozen=True)
class CommonConfig(_EnvConfig):
    """Connections shared by every service."""

    SERVICE = "common"
    kafka_bootstrap: str = _f("127.0.0.1:9092", "Kafka bootstrap servers", "OCRSTREAM_KAFKA_BOOTSTRAP")
    topic_prefix: str = _f("ocrstream.", "prefix of every topic name", "OCRSTREAM_TOPIC_PREFIX")
    redis_url: str = _f(
        "redis://127.0.0.1:6379/0", "Redis URL of the vision-token cache", "OCRSTREAM_REDIS_URL"
    )
    redis_key_prefix: str = _f("ocrstream:", "prefix of every Redis key", "OCRSTREAM_REDIS_KEY_PREFIX")
    s3_endpoint: str = _f("127.0.0.1:9000", "MinIO/S3 endpoint host:port", "OCRSTREAM_S3_ENDPOINT")
    # No default credentials: a service pointed at S3 without them fails at start (s3_credentials).
    s3_access_key: str = _f("", "S3 access key; required when S3 is used", "OCRSTREAM_S3_ACCESS_KEY")
    s3_secret_key: str = _f("", "S3 secret key; required when S3 is used", "OCRSTREAM_S3_SECRET_KEY")
    s3_bucket: str = _f("ocrstream", "bucket of documents, pages, tokens and results", "OCRSTREAM_S3_BUCKET")
    s3_secure: bool = _f(False, "use https for S3", "OCRSTREAM_S3_SECURE")
    store: str = _f("s3", "blob store: s3 | local", "OCRSTREAM_STORE")
    store_dir: str = _f("./.ocrstream-store", "folder of the local store", "OCRSTREAM_STORE_DIR")
    cache: str = _f("redis", "token cache: redis | memory", "OCRSTREAM_CACHE")
    otlp_endpoint: str = _f("", "OTLP/HTTP traces endpoint; empty = no export", "OCRSTREAM_OTLP_ENDPOINT")
    log_format: str = _f("json", "log format: json | text", "OCRSTREAM_LOG_FORMAT")
    checkpoint_dir: str = _f(
        "", "model checkpoint folder; empty = the shipped model", "OCRSTREAM_CHECKPOINT_DIR"
    )
    device: str = _f(
        "cpu",
        "torch device of the encoder, decoder and expert shards: auto | cuda | cuda:<n> | cpu",
        "OCRSTREAM_DEVICE",
    )
    dtype: str = _f(
        "", "model weights dtype; empty = bfloat16 on a GPU, float32 on the CPU", "OCRSTREAM_DTYPE"
    )

    def s3_credentials(self) -> tuple[str, str]:
        """(access key, secret key); raises with the variables to set when either is empty."""
        missing = [
            n
            for n, v in (
                ("OCRSTREAM_S3_ACCESS_KEY", self.s3_access_key),
                ("OCRSTREAM_S3_SECRET_KEY", self.s3_secret_key),
            )
            if not v
        ]
        if missing:
            raise ValueError(
                f"S3 at {self.s3_endpoint} is used but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} empty: there are no default credentials; set them "
                '(dev services: eval "$(bash scripts/infra/env.sh)"), or use OCRSTREAM_STORE=local'
            )
        return self.s3_access_key, self.s3_secret_key


@dataclass(frozen=True)
class WorkerConfig(_EnvConfig):
    """Consumer-loop settings; each service reads its own copy (``OCRSTREAM_<SERVICE>_...``)."""

    SERVICE = "worker"
    max_batch: int = _f(16, "records taken per poll")
    max_wait_ms: int = _f(50, "longest wait to fill a batch")
    max_retries: int = _f(5, "attempts on a transient error before the record is dead-lettered")
    backoff_s: float = _f(0.5, "first retry delay; doubles per attempt")
    backoff_max_s: float = _f(30.0, "retry delay ceiling")
    metrics_port: int = _f(9100, "port of /healthz, /readyz, /metrics; 0 = off")
    metrics_host: str = _f("0.0.0.0", "bind address of the health/metrics server")

    @classmethod
    def for_service(cls, service: str, env: Mapping[str, str] | None = None, **kw: Any) -> WorkerConfig:
        sub = type(f"{service.title()}WorkerConfig", (cls,), {"SERVICE": service})
        return sub.from_env(env, **kw)


@dataclass(frozen=True)
class TopicsConfig(_EnvConfig):
    """Topic layout, applied by ``ocrstream topics create`` (the chart's topics Job); services only
    check that their topics exist and re-check every ``check_interval_s`` while they do not."""

    SERVICE = "topics"
    partitions: int = _f(6, "partitions per pipeline topic (a stage's consumers never exceed its input's)")
    partitions_by_topic: tuple[str, ...] = _f(
        (), "per-topic partitions, comma-separated <topic>=<n> without the prefix, e.g. page.rasterized=24"
    )
    replication_factor: int = _f(
        1, "replication factor of created topics (1 = the dev broker; 3 in a cluster)"
    )
    check_interval_s: float = _f(5.0, "how often a service re-checks for missing topics (unready meanwhile)")

    def layout(self, prefix: str, suffixes: tuple[str, ...]) -> dict[str, int]:
        """Full topic name -> partitions for the pipeline's topic ``suffixes``."""
        by: dict[str, int] = {}
        for item in self.partitions_by_topic:
            name, sep, n = item.partition("=")
            name = name.strip().removeprefix(prefix)
            if not sep or name not in suffixes or not n.strip().isdigit() or int(n) < 1:
                raise ValueError(
                    f"OCRSTREAM_TOPICS_PARTITIONS_BY_TOPIC entry {item!r}: expected <topic>=<n >= 1> with "
                    f"<topic> one of {', '.join(suffixes)}"
                )
            by[name] = int(n)
        if self.partitions < 1 or self.replication_factor < 1:
            raise ValueError(
                f"OCRSTREAM_TOPICS_PARTITIONS={self.partitions} and _REPLICATION_FACTOR="
                f"{self.replication_factor} must be >= 1"
            )
        return {prefix + s: by.get(s, self.partitions) for s in suffixes}


@dataclass(frozen=True)
class IngestConfig(_EnvConfig):
    SERVICE = "ingest"
    host: str = _f("127.0.0.1", "HTTP API bind address")
    port: int = _f(8080, "HTTP API port (also serves /healthz, /readyz, /metrics)")
    api_keys: tuple[str, ...] = _f(
        (), "comma-separated accepted API keys (X-API-Key or Authorization: Bearer); required unless DEV_OPEN"
    )
    dev_open: bool = _f(False, "serve the API without API keys (local development only; never in a cluster)")
    max_bytes: int = _f(64 * 1024 * 1024, "largest accepted upload (the request is cut off past it)")
    default_mode: str = _f("default", "encoder mode when the request names none; default = the model's own")
    default_prompt: str = _f(
        "free_ocr", "prompt when the request names none (free_ocr, markdown, grounding, raw)"
    )
    s3_source_bucket: str = _f("", "bucket watched for new documents; empty = off")
    s3_source_prefix: str = _f("inbox/", "prefix watched in that bucket")
    watch_dir: str = _f("", "local folder watched for new documents; empty = off")
    poll_s: float = _f(5.0, "interval of the bucket/folder scans")
    refs_topic: bool = _f(True, "consume the document-reference topic")
    ref_roots: tuple[str, ...] = _f(
        (), "comma-separated absolute folders the reference topic may read; empty = no local paths"
    )
    ref_buckets: tuple[str, ...] = _f(
        (), "comma-separated buckets the reference topic may read; empty = none"
    )
    ref_http_prefixes: tuple[str, ...] = _f(
        (), "comma-separated http(s) URL prefixes chat requests may name as images; empty = none"
    )
    context_api: bool = _f(
        True, "serve /v1/context (context stores, progressive forgetting); the model loads on first use"
    )
    context_budget: int = _f(512, "decoder-token budget of each context store")


@dataclass(frozen=True)
class RasterizerConfig(_EnvConfig):
    SERVICE = "rasterizer"
    dpi: int = _f(144, "PDF render resolution")
    max_pages: int = _f(500, "documents with more pages are dead-lettered (oversized)")
    max_bytes: int = _f(64 * 1024 * 1024, "documents with more bytes are dead-lettered (oversized)")
    max_page_pixels: int = _f(40_000_000, "pages with more rendered pixels are dead-lettered (oversized)")
    max_side: int = _f(2048, "page images are scaled down so the long side is at most this")


@dataclass(frozen=True)
class EncoderConfig(_EnvConfig):
    SERVICE = "encoder"
    # micro-batch size and wait: OCRSTREAM_ENCODER_MAX_BATCH / _MAX_WAIT_MS (WorkerConfig)
    cache_ttl_s: int = _f(7 * 24 * 3600, "TTL of vision tokens in Redis (MinIO keeps them durably)")
    redis_maxmemory_policy: str = _f(
        "allkeys-lru",
        "eviction policy the token cache expects: checked at start, a mismatch logged, never set",
    )


@dataclass(frozen=True)
class DecoderConfig(_EnvConfig):
    SERVICE = "decoder"
    backend: str = _f("inprocess", "decoder backend: inprocess | triton")
    triton_url: str = _f("127.0.0.1:8001", "Triton gRPC endpoint (backend=triton)")
    max_new_tokens: int = _f(1024, "decode budget per page; hitting it without EOS is a failure")
    ngram: int = _f(20, "no-repeat n-gram size (0 = off)")
    ngram_window: int = _f(90, "no-repeat n-gram window")
    ladder: str = _f("t=0.0;t=0.2;t=0.5;mode=small", "retry ladder: ';'-separated t=<temp> | mode=<mode>")
    loop_min_repeats: int = _f(4, "a period repeated this many times at the end is a loop")
    loop_min_tokens: int = _f(24, "... and covering at least this many tokens")


@dataclass(frozen=True)
class TritonClientConfig(_EnvConfig):
    """The decoder's Triton client (``ocrstream.backends.triton``), read when backend=triton."""

    SERVICE = "decoder"
    triton_model: str = _f("ocr_decoder", "Triton decoder model name (backend=triton)")
    triton_timeout_s: float = _f(600.0, "deadline of one decode call to Triton")
    triton_retries: int = _f(2, "resends of a page that failed or got no final response")
    triton_max_in_flight: int = _f(64, "pages in flight on one stream")


@dataclass(frozen=True)
class AssemblerConfig(_EnvConfig):
    SERVICE = "assembler"
    degraded_rate: float = _f(0.1, "documents whose failed-page share exceeds this are marked degraded")


SERVICE_CONFIGS: tuple[type[_EnvConfig], ...] = (
    CommonConfig,
    WorkerConfig,
    TopicsConfig,
    IngestConfig,
    RasterizerConfig,
    EncoderConfig,
    DecoderConfig,
    TritonClientConfig,
    AssemblerConfig,
)


def env_table() -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every setting; WorkerConfig rows use ``<SERVICE>``."""
    rows = []
    for cls in SERVICE_CONFIGS:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            name = cls.env_name(f)
            if cls is WorkerConfig:
                name = name.replace("_WORKER_", "_<SERVICE>_")
            default = f.default
            if isinstance(default, tuple):
                default = ",".join(default)
            rows.append((name, str(default), f.metadata["doc"]))
    return rows
