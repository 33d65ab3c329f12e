"""Root conftest: the real dev services as session fixtures, and unique names for per-test isolation.

Services (Kafka, Redis, the S3 store spoken to with the MinIO SDK, Triton) run on 127.0.0.1 at the
ports of ``scripts/infra/defaults.env`` (each overridable by its env var). ``--services`` picks where
they come from:

- ``auto`` (default): use the dev services; one that does not answer is started with
  ``scripts/infra/<service>.sh start`` and stopped again at the end of the session.
- ``running``: use the dev services as they are (``scripts/infra/up.sh`` beforehand); start nothing.
- ``env``: use the endpoints in ``OCRSTREAM_TEST_KAFKA`` (bootstrap), ``OCRSTREAM_TEST_REDIS`` (URL),
  ``OCRSTREAM_TEST_MINIO`` (host:port; ``OCRSTREAM_TEST_MINIO_ACCESS_KEY``/``_SECRET_KEY``),
  ``OCRSTREAM_TEST_TRITON_HTTP``/``_GRPC`` (host:port); start nothing.

A service that cannot be had fails the test under ``CI=true`` and skips it elsewhere, with the reason.
"""

import os

# Must precede any @triton.jit decorator (cpu-runtime-notes §2): without an NVIDIA device, Triton-language
# kernels run in the interpreter on CPU. A cheap device-node check: importing torch here would be slow.
if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import dataclasses  # noqa: E402
import logging  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.fixtures import backbone, rng, tiny_checkpoint, tiny_model  # noqa: E402, F401 - shared fixtures

logger = logging.getLogger("tests.services")

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "scripts" / "infra"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
SERVICES = ("kafka", "redis", "minio", "triton")


def _dev_settings() -> dict[str, str]:
    """defaults.env overlaid with the environment: the same resolution as scripts/infra/lib.sh."""
    values: dict[str, str] = {}
    for line in (INFRA / "defaults.env").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key] = os.environ.get(key) or value
    return values


@dataclasses.dataclass(frozen=True)
class S3Endpoint:
    """An S3 endpoint as the MinIO SDK takes it."""

    endpoint: str  # host:port
    access_key: str
    secret_key: str
    secure: bool = False


@dataclasses.dataclass(frozen=True)
class TritonUrls:
    http: str  # host:port, as tritonclient.http takes it
    grpc: str  # host:port, as tritonclient.grpc takes it


@dataclasses.dataclass(frozen=True)
class Endpoints:
    kafka: str
    redis: str
    minio: S3Endpoint
    triton: TritonUrls


def _endpoints(mode: str) -> Endpoints:
    if mode == "env":
        env = os.environ
        return Endpoints(
            kafka=env.get("OCRSTREAM_TEST_KAFKA", ""),
            redis=env.get("OCRSTREAM_TEST_REDIS", ""),
            minio=S3Endpoint(
                env.get("OCRSTREAM_TEST_MINIO", ""),
                env.get("OCRSTREAM_TEST_MINIO_ACCESS_KEY", "minioadmin"),
                env.get("OCRSTREAM_TEST_MINIO_SECRET_KEY", "minioadmin"),
                env.get("OCRSTREAM_TEST_MINIO_SECURE", "").lower() in ("1", "true"),
            ),
            triton=TritonUrls(
                env.get("OCRSTREAM_TEST_TRITON_HTTP", ""), env.get("OCRSTREAM_TEST_TRITON_GRPC", "")
            ),
        )
    s = _dev_settings()
    host = s["OCRSTREAM_DEV_HOST"]
    return Endpoints(
        kafka=f"{host}:{s['OCRSTREAM_DEV_KAFKA_PORT']}",
        redis=f"redis://{host}:{s['OCRSTREAM_DEV_REDIS_PORT']}/0",
        minio=S3Endpoint(
            f"{host}:{s['OCRSTREAM_DEV_MINIO_PORT']}",
            s["OCRSTREAM_DEV_MINIO_ACCESS_KEY"],
            s["OCRSTREAM_DEV_MINIO_SECRET_KEY"],
        ),
        triton=TritonUrls(
            f"{host}:{s['OCRSTREAM_DEV_TRITON_HTTP_PORT']}", f"{host}:{s['OCRSTREAM_DEV_TRITON_GRPC_PORT']}"
        ),
    )


# --- probes: each raises with the reason when the service does not answer -------------------------


def _probe_kafka(ep: Endpoints) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=ep.kafka, request_timeout_ms=5000, client_id="ocrstream-probe")
    try:
        admin.describe_cluster()
    finally:
        admin.close()


def _probe_redis(ep: Endpoints) -> None:
    import redis

    client = redis.Redis.from_url(ep.redis, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


def _probe_minio(ep: Endpoints) -> None:
    from minio import Minio

    m = ep.minio
    Minio(m.endpoint, access_key=m.access_key, secret_key=m.secret_key, secure=m.secure).list_buckets()


def _probe_triton(ep: Endpoints) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    if not httpclient.InferenceServerClient(ep.triton.http, connection_timeout=3.0).is_server_ready():
        raise RuntimeError(f"tritonserver at http {ep.triton.http} is not ready")
    if not grpcclient.InferenceServerClient(ep.triton.grpc).is_server_ready(client_timeout=3.0):
        raise RuntimeError(f"tritonserver at grpc {ep.triton.grpc} is not ready")


_PROBES: dict[str, Callable[[Endpoints], None]] = {
    "kafka": _probe_kafka,
    "redis": _probe_redis,
    "minio": _probe_minio,
    "triton": _probe_triton,
}


def _missing(reason: str) -> None:
    """No service: a failure under CI (it must not pass by skipping), a skip with the reason elsewhere."""
    if IN_CI:
        pytest.fail(f"service unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


class ServiceManager:
    """Probes each service once per session; in ``auto`` mode starts the missing ones and stops them at exit."""

    def __init__(self, mode: str, log_dir: Path) -> None:
        self.mode = mode
        self.endpoints = _endpoints(mode)
        self.log_dir = log_dir
        self._state: dict[str, str | None] = {}  # service -> None (ok) or the reason it is unavailable
        self._started: list[str] = []

    def _probe(self, name: str) -> str | None:
        try:
            _PROBES[name](self.endpoints)
        except Exception as exc:  # any failure means "not answering"; the reason is reported
            return f"{type(exc).__name__}: {exc}"
        return None

    def _start(self, name: str) -> str | None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"start-{name}.log"
        t0 = time.monotonic()
        with log_path.open("w") as log:
            proc = subprocess.run(
                ["bash", str(INFRA / f"{name}.sh"), "start"],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if proc.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
            return f"scripts/infra/{name}.sh start exited {proc.returncode}:\n{tail}"
        self._started.append(name)
        logger.info("started %s in %.1fs", name, time.monotonic() - t0)
        return None

    def require(self, name: str) -> None:
        if name not in self._state:
            self._state[name] = self._resolve(name)
        if self._state[name] is not None:
            _missing(f"{name}: {self._state[name]}")

    def _resolve(self, name: str) -> str | None:
        if self.mode == "env" and not self._configured(name):
            return f"--services=env but OCRSTREAM_TEST_{name.upper()} is not set"
        reason = self._probe(name)
        if reason is None or self.mode != "auto":
            hint = "" if reason is None else " (start it with: bash scripts/infra/up.sh " + name + ")"
            return None if reason is None else f"does not answer: {reason}{hint}"
        start_error = self._start(name)
        if start_error is not None:
            return start_error
        reason = self._probe(name)
        return None if reason is None else f"started but does not answer: {reason}"

    def _configured(self, name: str) -> bool:
        ep = self.endpoints
        return bool(
            {"kafka": ep.kafka, "redis": ep.redis, "minio": ep.minio.endpoint, "triton": ep.triton.http}[name]
        )

    def stop_started(self) -> None:
        if os.environ.get("OCRSTREAM_KEEP_SERVICES") == "1":
            return
        for name in reversed(self._started):
            subprocess.run(["bash", str(INFRA / f"{name}.sh"), "stop"], check=False, capture_output=True)


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python 3.0 loads its protocol schemas through importlib.resources' legacy API: ~200
    # DeprecationWarnings per session that bury the useful ones.
    for message in ("read_text is deprecated", "open_text is deprecated"):
        config.addinivalue_line("filterwarnings", f"ignore:{message}:DeprecationWarning")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--services",
        choices=("auto", "running", "env"),
        default=os.environ.get("OCRSTREAM_TEST_SERVICES", "auto"),
        help="where the Kafka/Redis/MinIO/Triton test services come from: auto = dev services, started when "
        "missing; running = dev services as they are; env = OCRSTREAM_TEST_* endpoints (default: %(default)s)",
    )


@pytest.fixture(scope="session")
def dev_services(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceManager]:
    manager = ServiceManager(request.config.getoption("--services"), tmp_path_factory.mktemp("services"))
    yield manager
    manager.stop_started()


@pytest.fixture(scope="session")
def kafka_bootstrap(dev_services: ServiceManager) -> str:
    """Bootstrap servers (host:port) of a Kafka broker that auto-creates topics."""
    dev_services.require("kafka")
    return dev_services.endpoints.kafka


@pytest.fixture(scope="session")
def redis_url(dev_services: ServiceManager) -> str:
    """redis:// URL of a Redis server."""
    dev_services.require("redis")
    return dev_services.endpoints.redis


@pytest.fixture(scope="session")
def minio_endpoint(dev_services: ServiceManager) -> S3Endpoint:
    """S3 endpoint and credentials for the MinIO SDK (``Minio(e.endpoint, e.access_key, e.secret_key, secure=e.secure)``)."""
    dev_services.require("minio")
    return dev_services.endpoints.minio


@pytest.fixture(scope="session")
def triton_urls(dev_services: ServiceManager) -> TritonUrls:
    """HTTP and gRPC host:port of a tritonserver serving model_repo/."""
    dev_services.require("triton")
    return dev_services.endpoints.triton


# --- per-test isolation: unique names so tests never see each other's data -----------------------


def _uid() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory of unique names: ``unique_name("doc")`` -> ``"doc-3f9a1c2b7d4e"``."""
    return lambda stem="t": f"{stem}-{_uid()}"


@pytest.fixture
def kafka_topic_prefix() -> str:
    """A topic prefix of this test alone (pass it as the service's topic prefix)."""
    return f"test.{_uid()}."


@pytest.fixture
def kafka_group_id() -> str:
    """A consumer group of this test alone."""
    return f"test-group-{_uid()}"


@pytest.fixture
def pipeline_topics(kafka_bootstrap: str, kafka_topic_prefix: str) -> Iterator[dict[str, int]]:
    """Every pipeline topic under ``kafka_topic_prefix``, 2 partitions each, made as a deployment
    makes them (``ocrstream topics create``): services only check for their topics. Deleted after."""
    from kafka import KafkaAdminClient

    from ocrstream.bus.kafka import create_topics
    from ocrstream.messages import MESSAGE_TYPES

    layout = {kafka_topic_prefix + t.TOPIC: 2 for t in MESSAGE_TYPES}
    create_topics(kafka_bootstrap, layout, replication=1)
    yield layout
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="ocrstream-test-cleanup")
    try:
        admin.delete_topics([t for t in admin.list_topics() if t.startswith(kafka_topic_prefix)])
    except Exception as exc:  # noqa: BLE001 - cleanup only; a leftover topic harms no other test
        logger.warning("could not delete topics %s*: %s", kafka_topic_prefix, exc)
    finally:
        admin.close()


@pytest.fixture
def redis_key_prefix() -> str:
    """A Redis key prefix of this test alone."""
    return f"test:{_uid()}:"


@pytest.fixture
def redis_client(redis_url: str, redis_key_prefix: str) -> Iterator[object]:
    """A Redis client; the keys under ``redis_key_prefix`` are deleted after the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    keys = list(client.scan_iter(match=f"{redis_key_prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def minio_client(minio_endpoint: S3Endpoint) -> object:
    from minio import Minio

    e = minio_endpoint
    return Minio(e.endpoint, access_key=e.access_key, secret_key=e.secret_key, secure=e.secure)


@pytest.fixture
def minio_bucket(minio_client) -> Iterator[str]:
    """A fresh, empty bucket of this test alone; emptied and removed afterwards."""
    name = f"test-{_uid()}"  # S3 bucket names: lowercase letters, digits, '-'
    minio_client.make_bucket(name)
    yield name
    for obj in minio_client.list_objects(name, recursive=True):
        minio_client.remove_object(name, obj.object_name)
    minio_client.remove_bucket(name)


@pytest.fixture
def dev_common(
    kafka_bootstrap: str,
    redis_url: str,
    minio_endpoint: S3Endpoint,
    minio_bucket: str,
    kafka_topic_prefix: str,
    redis_key_prefix: str,
    pipeline_topics: dict[str, int],
):  # noqa: ANN201 - ocrstream.config.CommonConfig
    """The services' common settings for the dev services, this test's names (topics made)."""
    from ocrstream.config import CommonConfig

    return CommonConfig(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=kafka_topic_prefix,
        redis_url=redis_url,
        redis_key_prefix=redis_key_prefix,
        s3_endpoint=minio_endpoint.endpoint,
        s3_access_key=minio_endpoint.access_key,
        s3_secret_key=minio_endpoint.secret_key,
        s3_bucket=minio_bucket,
        s3_secure=minio_endpoint.secure,
    )
