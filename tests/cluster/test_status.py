"""The verdict and the table, fed plain dicts as k8s.py and lag.py produce them."""

from __future__ import annotations

import random

import pytest

from ocrstream.cluster.status import (
    Verdict,
    assess,
    build_status,
    describe_scaler,
    keeping_up,
    render_table,
)


def workload(component: str, desired: int, ready: int, partitions: int = 12, threshold: int = 20) -> dict:
    return {
        "name": f"rel-ocrstream-{component}",
        "component": component,
        "desired": desired,
        "ready": ready,
        "consumer_group": f"ocrstream-{component}",
        "input_topic": f"topic-{component}",
        "partitions": partitions,
        "lag_threshold": threshold,
    }


def keda(component: str, lo: int, hi: int, threshold: int, active: bool = True, **cond: str) -> dict:
    conditions = {"Ready": {"status": "True"}, "Active": {"status": "True" if active else "False"}}
    conditions.update({k: {"status": v} for k, v in cond.items()})
    return {
        "kind": "ScaledObject",
        "name": f"rel-ocrstream-{component}",
        "target": f"rel-ocrstream-{component}",
        "min": lo,
        "max": hi,
        "current": None,
        "desired": None,
        "lag_threshold": threshold,
        "conditions": conditions,
    }


def test_under_threshold_keeps_up() -> None:
    ready = random.randint(1, 8)
    lag = random.randint(0, 20 * ready)
    s = assess(workload("encoder", ready, ready), keda("encoder", 1, 12, 20), {"total": lag})
    assert s.verdict is (Verdict.KEEPING_UP)
    assert s.lag == lag and s.lag_per_replica == pytest.approx(lag / ready)


def test_over_threshold_with_headroom_is_scaling() -> None:
    s = assess(workload("encoder", 3, 3), keda("encoder", 1, 12, 20), {"total": 3 * 20 + 1})
    assert s.verdict is Verdict.SCALING
    assert "3/12 replicas" in s.reason


def test_over_threshold_at_max_is_behind_and_names_the_ceiling() -> None:
    s = assess(workload("decoder", 4, 4, partitions=4, threshold=8), keda("decoder", 1, 4, 8), {"total": 500})
    assert s.verdict is Verdict.BEHIND
    assert s.reason == "lag/replica 125 > 8 at 4 replicas (max 4, 4 partitions)"


def test_skewed_partition_is_pointed_out() -> None:
    lag = {"total": 1000, "max_partition_lag": 900}
    s = assess(workload("decoder", 4, 4, partitions=4, threshold=8), keda("decoder", 1, 4, 8), lag)
    assert s.reason.endswith("one partition holds 900")


def test_trend_beats_snapshot() -> None:
    w, sc = workload("encoder", 12, 12), keda("encoder", 1, 12, 20)
    # Far above the threshold but draining: keeping up, with an ETA.
    s = assess(w, sc, {"total": 5000}, previous_lag={"total": 5600}, interval_s=30)
    assert s.verdict is Verdict.KEEPING_UP and s.rate == pytest.approx(-20.0)
    assert "empty in ~250 s" in s.reason
    # Below the threshold but growing at max replicas: behind.
    s = assess(w, sc, {"total": 200}, previous_lag={"total": 100}, interval_s=10)
    assert s.verdict is Verdict.BEHIND and s.rate == pytest.approx(10.0)
    # Growing with headroom: scaling.
    s = assess(workload("encoder", 2, 2), sc, {"total": 200}, previous_lag={"total": 100}, interval_s=10)
    assert s.verdict is Verdict.SCALING


def test_zero_replicas() -> None:
    sc = keda("encoder", 0, 12, 20, active=False)
    assert assess(workload("encoder", 0, 0), sc, {"total": 0}).verdict is Verdict.IDLE
    assert assess(workload("encoder", 1, 0), sc, {"total": 7}).verdict is Verdict.SCALING
    s = assess(workload("encoder", 0, 0), sc, {"total": 7})
    assert s.verdict is Verdict.STALLED and s.lag_per_replica is None


def test_lag_error_is_unknown_not_ok() -> None:
    s = assess(workload("decoder", 1, 1), keda("decoder", 1, 4, 8), {"error": "kafka at k:9092: timed out"})
    assert s.verdict is Verdict.UNKNOWN and "timed out" in s.reason
    assert not keeping_up([s])


def test_describe_scaler() -> None:
    assert describe_scaler(keda("e", 1, 12, 20)) == "keda 1-12 active"
    assert describe_scaler(keda("e", 0, 12, 20, active=False)) == "keda 0-12 inactive"
    assert describe_scaler(keda("e", 1, 4, 8, Fallback="True")) == "keda 1-4 FALLBACK"
    assert describe_scaler(keda("e", 1, 4, 8, Ready="False")) == "keda 1-4 NOT-READY"
    hpa = {
        "kind": "HorizontalPodAutoscaler",
        "min": 1,
        "max": 6,
        "current": 2,
        "desired": 3,
        "conditions": {},
    }
    assert describe_scaler(hpa) == "hpa 1-6 cur=2 want=3"
    hpa["conditions"] = {"ScalingActive": {"status": "False"}}
    assert describe_scaler(hpa) == "hpa 1-6 cur=2 want=3 NO-METRICS"
    assert describe_scaler(None) == "none"


def test_table_and_summary() -> None:
    enc_lag, dec_lag = random.randint(0, 100), random.randint(1000, 5000)
    workloads = [
        workload("decoder", 4, 4, partitions=4, threshold=8),
        workload("encoder", 2, 2),
        {"name": "rel-ocrstream-ingest", "component": "ingest", "desired": 2, "ready": 2},
    ]
    scalers = [keda("encoder", 1, 12, 20), keda("decoder", 1, 4, 8)]
    lags = {"ocrstream-encoder": {"total": enc_lag}, "ocrstream-decoder": {"total": dec_lag}}
    rows = build_status(workloads, scalers, lags)
    assert [r.component for r in rows] == ["ingest", "encoder", "decoder"]
    assert [r.verdict for r in rows] == [
        Verdict.KEEPING_UP,
        Verdict.KEEPING_UP if enc_lag <= 40 else Verdict.SCALING,
        Verdict.BEHIND,
    ]
    text = render_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["SERVICE", "READY", "SCALER", "GROUP", "LAG", "LAG/REPL", "VERDICT", "WHY"]
    decoder_line = next(line for line in lines if line.startswith("decoder"))
    assert "4/4" in decoder_line and "keda 1-4 active" in decoder_line and str(dec_lag) in decoder_line
    assert f"{dec_lag / 4:.0f}/8" in decoder_line and "falling behind" in decoder_line
    assert lines[-1].startswith("ATTENTION: encoder ")
    assert lines[-1].endswith("decoder falling behind")
    # Columns line up: every row's VERDICT starts at the header's offset.
    col = lines[0].index("VERDICT")
    assert all(line[col:].startswith(r.verdict.value) for line, r in zip(lines[1:4], rows, strict=True))


def test_all_keeping_up_summary() -> None:
    rows = build_status(
        [workload("encoder", 1, 1), workload("decoder", 1, 1, threshold=8)],
        [keda("encoder", 1, 12, 20), keda("decoder", 1, 4, 8)],
        {"ocrstream-encoder": {"total": 3}, "ocrstream-decoder": {"total": 0}},
    )
    assert keeping_up(rows)
    assert render_table(rows).splitlines()[-1] == "OK: encoder keeping up, decoder keeping up"
