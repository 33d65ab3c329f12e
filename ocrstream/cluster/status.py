"""Per-service status and the "keeping up" verdict, from plain dicts (no cluster, no Kafka here).

Inputs (what ``ocrstream.cluster.k8s`` and ``ocrstream.cluster.lag`` return):

- workload: ``{"name", "component", "desired", "ready", "consumer_group", "input_topic",
  "partitions", "lag_threshold"}`` (the last four from the chart's ``ocrstream.io/*`` annotations;
  None for a service that consumes nothing, such as the dev infrastructure).
- scaler: ``{"kind": "ScaledObject"|"HorizontalPodAutoscaler", "name", "target", "min", "max",
  "current", "desired", "lag_threshold", "conditions": {type: {"status", "reason", "message"}}}``.
- lag: ``{"total", "max_partition_lag", "uncommitted", ...}`` or ``{"error": "..."}``.

A single snapshot judges lag per ready replica against the scaler's threshold; two snapshots
(``previous_lag`` and ``interval_s``) judge the trend instead, which is what "keeping up" means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    KEEPING_UP = "keeping up"
    IDLE = "idle"
    SCALING = "scaling up"
    BEHIND = "falling behind"
    STALLED = "stalled"
    UNKNOWN = "unknown"


# Services whose verdicts the summary line calls out (the two GPU-heavy stages).
WATCHED = ("encoder", "decoder")


@dataclass(frozen=True)
class ServiceStatus:
    component: str
    deployment: str
    desired: int
    ready: int
    scaler: str
    consumer_group: str | None
    lag: int | None
    lag_per_replica: float | None
    lag_threshold: int | None
    rate: float | None  # lag change per second between two samples (negative: draining)
    verdict: Verdict
    reason: str

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["verdict"] = self.verdict.value
        return d


def describe_scaler(scaler: Mapping[str, Any] | None) -> str:
    """One short cell: `keda 1-12 active`, `keda 1-4 FALLBACK`, `hpa 1-6 cur=2 want=3`, `none`."""
    if not scaler:
        return "none"
    bounds = f"{scaler.get('min', '?')}-{scaler.get('max', '?')}"
    cond = scaler.get("conditions") or {}

    def is_true(kind: str) -> bool:
        return (cond.get(kind) or {}).get("status") == "True"

    if scaler["kind"] == "ScaledObject":
        if "Ready" in cond and not is_true("Ready"):
            state = "NOT-READY"
        elif is_true("Fallback"):
            state = "FALLBACK"
        elif is_true("Active"):
            state = "active"
        else:
            state = "inactive"
        return f"keda {bounds} {state}"
    state = f"cur={scaler.get('current', '?')} want={scaler.get('desired', '?')}"
    if "ScalingActive" in cond and not is_true("ScalingActive"):
        state += " NO-METRICS"
    elif is_true("ScalingLimited"):
        state += " limited"
    return f"hpa {bounds} {state}"


def assess(
    workload: Mapping[str, Any],
    scaler: Mapping[str, Any] | None,
    lag: Mapping[str, Any] | None,
    *,
    previous_lag: Mapping[str, Any] | None = None,
    interval_s: float | None = None,
) -> ServiceStatus:
    """Status of one service; see the module docstring for the input shapes."""
    desired, ready = int(workload.get("desired") or 0), int(workload.get("ready") or 0)
    threshold = (scaler or {}).get("lag_threshold") or workload.get("lag_threshold")
    threshold = int(threshold) if threshold else None
    max_replicas = (scaler or {}).get("max")
    if max_replicas is None:
        max_replicas = desired
    base = {
        "component": workload["component"],
        "deployment": workload["name"],
        "desired": desired,
        "ready": ready,
        "scaler": describe_scaler(scaler),
        "consumer_group": workload.get("consumer_group"),
        "lag_threshold": threshold,
    }

    def result(
        verdict: Verdict, reason: str, total: int | None = None, rate: float | None = None
    ) -> ServiceStatus:
        per = None if total is None or ready == 0 else total / ready
        return ServiceStatus(
            **base, lag=total, lag_per_replica=per, rate=rate, verdict=verdict, reason=reason
        )

    if not workload.get("consumer_group"):
        ok = ready >= desired and desired > 0
        return result(
            Verdict.KEEPING_UP if ok else Verdict.STALLED, f"{ready}/{desired} ready (no consumer group)"
        )
    if lag is None or "error" in lag:
        reason = (lag or {}).get("error", "lag not measured")
        return result(Verdict.UNKNOWN, f"lag unavailable: {reason}")

    total = int(lag["total"])
    rate = None
    if previous_lag is not None and "total" in previous_lag and interval_s:
        rate = (total - int(previous_lag["total"])) / float(interval_s)

    if ready == 0:
        if total == 0:
            return result(Verdict.IDLE, "no replicas, no lag", total, rate)
        if desired > 0 or (scaler or {}).get("desired", 0):
            return result(Verdict.SCALING, f"lag {total}, {desired} replica(s) starting", total, rate)
        return result(Verdict.STALLED, f"lag {total} and no replicas wanted", total, rate)
    if total == 0:
        return result(Verdict.KEEPING_UP, "no lag", total, rate)

    at_max = ready >= int(max_replicas)
    partitions = workload.get("partitions")
    ceiling = f" (max {max_replicas}" + (f", {partitions} partitions)" if partitions else ")")
    if rate is not None:
        if rate <= 0:
            eta = f", empty in ~{total / -rate:.0f} s" if rate < 0 else ""
            return result(Verdict.KEEPING_UP, f"lag {total} draining {rate:+.1f}/s{eta}", total, rate)
        if at_max:
            return result(
                Verdict.BEHIND, f"lag growing {rate:+.1f}/s at {ready} replicas{ceiling}", total, rate
            )
        return result(
            Verdict.SCALING, f"lag growing {rate:+.1f}/s, {ready}/{max_replicas} replicas", total, rate
        )

    per = total / ready
    if threshold is None or per <= threshold:
        limit = f" <= {threshold}" if threshold else ""
        return result(Verdict.KEEPING_UP, f"lag/replica {per:.0f}{limit}", total, rate)
    if at_max:
        reason = f"lag/replica {per:.0f} > {threshold} at {ready} replicas{ceiling}"
        skew = int(lag.get("max_partition_lag") or 0)
        if skew and skew * 2 > total:
            reason += f"; one partition holds {skew}"
        return result(Verdict.BEHIND, reason, total, rate)
    return result(
        Verdict.SCALING, f"lag/replica {per:.0f} > {threshold}, {ready}/{max_replicas} replicas", total, rate
    )


def build_status(
    workloads: Iterable[Mapping[str, Any]],
    scalers: Iterable[Mapping[str, Any]],
    lags: Mapping[str, Mapping[str, Any]],
    *,
    previous_lags: Mapping[str, Mapping[str, Any]] | None = None,
    interval_s: float | None = None,
) -> list[ServiceStatus]:
    """Pair each workload with the scaler targeting it and its group's lag; ordered by pipeline stage."""
    by_target = {s["target"]: s for s in scalers}
    rows = []
    for w in workloads:
        group = w.get("consumer_group")
        rows.append(
            assess(
                w,
                by_target.get(w["name"]),
                lags.get(group) if group else None,
                previous_lag=(previous_lags or {}).get(group) if group else None,
                interval_s=interval_s,
            )
        )
    order = {c: i for i, c in enumerate(("ingest", "rasterizer", "encoder", "decoder", "assembler"))}
    return sorted(rows, key=lambda r: (order.get(r.component, len(order)), r.component))


def keeping_up(rows: Iterable[ServiceStatus], components: Iterable[str] = WATCHED) -> bool:
    """True when every named service present is keeping up or idle (scaling still counts as not yet)."""
    wanted = set(components)
    return all(r.verdict in (Verdict.KEEPING_UP, Verdict.IDLE) for r in rows if r.component in wanted)


def render_table(rows: list[ServiceStatus]) -> str:
    """Fixed-width table plus a one-line summary for the watched services."""
    header = ("SERVICE", "READY", "SCALER", "GROUP", "LAG", "LAG/REPL", "VERDICT", "WHY")
    body = []
    for r in rows:
        per = "-" if r.lag_per_replica is None else f"{r.lag_per_replica:.0f}"
        if r.lag_threshold and r.lag_per_replica is not None:
            per += f"/{r.lag_threshold}"
        body.append(
            (
                r.component,
                f"{r.ready}/{r.desired}",
                r.scaler,
                r.consumer_group or "-",
                "-" if r.lag is None else str(r.lag),
                per,
                r.verdict.value,
                r.reason,
            )
        )
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in [header, *body]
    ]
    watched = [r for r in rows if r.component in WATCHED]
    if watched:
        parts = ", ".join(f"{r.component} {r.verdict.value}" for r in watched)
        lines.append("")
        lines.append(("OK: " if keeping_up(rows) else "ATTENTION: ") + parts)
    return "\n".join(line.rstrip() for line in lines)
