"""``ocrstream cluster status``: per service, desired/ready replicas, the scaler's state and the
consumer-group lag, with a verdict on whether encoder and decoder keep up.

Needs the ``cluster`` extra (the ``kubernetes`` client) and kafka-python; reads the namespace
through the kubeconfig (or in-cluster config). Kafka must be reachable from where this runs: pass
``--bootstrap`` (e.g. through ``kubectl port-forward``) when the in-cluster address is not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from ocrstream.cluster import status as st
from ocrstream.cluster.lag import LagError, group_lag


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cluster", help="inspect a deployed ocrstream release (Kubernetes)")
    csub = p.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")
    s = csub.add_parser("status", help="replicas, scaler state and consumer lag per service")
    s.add_argument(
        "-n",
        "--namespace",
        default=os.environ.get("OCRSTREAM_NAMESPACE", "ocrstream"),
        help="namespace of the release",
    )
    s.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    s.add_argument("--context", default=None, help="kubeconfig context (default: current)")
    s.add_argument("--release", default=None, help="Helm release name (default: every ocrstream release)")
    s.add_argument(
        "--bootstrap",
        default=os.environ.get("OCRSTREAM_KAFKA_BOOTSTRAP"),
        help="Kafka bootstrap reachable from here (default: $OCRSTREAM_KAFKA_BOOTSTRAP, else the release's ConfigMap)",
    )
    s.add_argument(
        "--sample",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="measure lag twice, SECONDS apart, to judge the trend",
    )
    s.add_argument("--kafka-timeout", type=float, default=10.0, metavar="SECONDS", help="per Kafka request")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--check", action="store_true", help="exit 1 unless encoder and decoder keep up")
    s.set_defaults(func=cmd_status)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


LagFn = Callable[[str, str, list[str]], Mapping[str, Any]]


def measure_lags(
    workloads: list[Mapping[str, Any]],
    bootstrap: str | None,
    *,
    timeout_s: float = 10.0,
    lag_fn: LagFn = group_lag,
) -> dict[str, Any]:
    """Lag per consumer group of the given workloads; a failure becomes {"error": ...} for that group."""
    lags: dict[str, Any] = {}
    for w in workloads:
        group, topic = w.get("consumer_group"), w.get("input_topic")
        if not group or not topic or group in lags:
            continue
        if not bootstrap:
            lags[group] = {"error": "no Kafka bootstrap (pass --bootstrap)"}
            continue
        try:
            lags[group] = dict(lag_fn(bootstrap, group, [topic], timeout_ms=int(timeout_s * 1000)))
        except LagError as exc:
            lags[group] = {"error": str(exc)}
    return lags


def cmd_status(args: argparse.Namespace) -> int:
    from ocrstream.cluster.k8s import ClusterReader

    try:
        reader = ClusterReader(args.namespace, context=args.context, kubeconfig=args.kubeconfig)
        workloads = reader.workloads(args.release)
        scalers = reader.scalers(args.release)
        bootstrap = args.bootstrap or reader.kafka_bootstrap(args.release)
    except Exception as exc:  # the kubernetes client raises several unrelated types; report, don't trace
        print(f"cannot read namespace {args.namespace!r}: {exc}", file=sys.stderr)
        return 2
    if not workloads:
        print(f"no ocrstream Deployments in namespace {args.namespace!r}", file=sys.stderr)
        return 2
    previous = None
    if args.sample > 0:
        previous = measure_lags(workloads, bootstrap, timeout_s=args.kafka_timeout)
        time.sleep(args.sample)
    lags = measure_lags(workloads, bootstrap, timeout_s=args.kafka_timeout)
    rows = st.build_status(workloads, scalers, lags, previous_lags=previous, interval_s=args.sample or None)
    ok = st.keeping_up(rows)
    if args.json:
        print(
            json.dumps(
                {"namespace": args.namespace, "keeping_up": ok, "services": [r.as_dict() for r in rows]},
                indent=2,
            )
        )
    else:
        print(st.render_table(rows))
    return 1 if args.check and not ok else 0
