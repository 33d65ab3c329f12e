"""The fault suite on a smaller run (bench/faults.py has the 1,000-page one): pages through the
service processes over real Kafka, S3 and a private Redis while one encoder and one decoder are
SIGKILLed, Redis is stopped and some pages' PageDecoded records are delivered twice; every page
exactly once in the results, one completion per job, no worker crash."""

from __future__ import annotations

import importlib.util
import os
import random
import socket
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _faults():
    spec = importlib.util.spec_from_file_location("bench_faults", REPO / "bench" / "faults.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.minio
def test_every_page_exactly_once_through_kills_and_a_redis_outage(
    kafka_bootstrap,
    redis_url,  # noqa: ARG001 - the dev Redis fixture installs the redis-server the run starts privately
    minio_endpoint,
    minio_bucket,
    tmp_path,
):
    faults = _faults()
    rng = random.Random(os.urandom(8))
    plan = faults.Plan(
        pages=rng.randint(60, 90),
        redis_down_s=8.0,
        kill_in_outage=True,  # the decoder's restart meets no Redis: it must serve from the store
        seed=rng.randrange(2**31),
        timeout_s=240.0,
    )
    ep = faults.Endpoints(
        kafka_bootstrap,
        minio_endpoint.endpoint,
        minio_endpoint.access_key,
        minio_endpoint.secret_key,
        minio_bucket,
    )
    rep = faults.run(plan, ep, tmp_path, say=lambda _line: None)
    summary = "\n".join(rep.lines())
    assert not rep.timed_out, summary
    assert rep.kills == {"encoder": 1, "decoder": 1}, summary
    assert rep.replayed > 0 and rep.decoded_records >= rep.pages + rep.replayed, summary
    assert rep.redis_down_s >= plan.redis_down_s, summary
    assert rep.jobs_finished == rep.docs, summary
    assert (rep.lost, rep.duplicated, rep.duplicate_completions, rep.missing_completions) == (0, 0, 0, 0), (
        summary
    )
    assert rep.wrong_text == 0 and rep.model_pages == 0, summary  # every page checked against its own text
    assert rep.crashes == [], summary
    assert rep.dead_letters == [], summary
    assert set(rep.exit_codes.values()) == {0}, summary
    assert rep.ok


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_encoder_and_decoder_start_while_redis_is_down(tmp_path):
    """A worker (re)started during a Redis outage serves from the store instead of exiting (the
    fault run saw a restarted encoder crash-loop on the start-up policy check)."""
    from ocrstream.cache.tiers import TokenTiers
    from ocrstream.config import CommonConfig, EncoderConfig
    from ocrstream.errors import CacheUnavailable
    from ocrstream.services.wiring import build_cache
    from ocrstream.store.local import LocalStore
    from ocrstream.telemetry import Telemetry

    common = CommonConfig.from_env({}, cache="redis", redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    cache = build_cache(common, EncoderConfig.from_env({}))
    with pytest.raises(CacheUnavailable):
        cache.get("k")
    tiers = TokenTiers(cache, LocalStore(tmp_path), Telemetry("test"))
    blob = os.urandom(64)
    tiers.put("tokens/k.vt", blob)
    assert tiers.get("tokens/k.vt") == blob
