"""``ocrstream topics create | check``: the pipeline's Kafka topics, made by an admin step.

Services never create topics (they check and stay unready without them), so partitions and the
replication factor are set once here, from ``OCRSTREAM_TOPICS_*`` (ocrstream/config.py
``TopicsConfig``) or the flags; the Helm chart's topics Job runs ``ocrstream topics create``.
"""

from __future__ import annotations

import argparse
import sys
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("topics", help="create or check the pipeline's Kafka topics (an admin step)")
    tsub = p.add_subparsers(dest="topics_command", metavar="SUBCOMMAND")
    c = tsub.add_parser(
        "create",
        help="create missing topics and grow partitions (idempotent; never shrinks)",
        description="Partitions and replication come from OCRSTREAM_TOPICS_PARTITIONS, "
        "OCRSTREAM_TOPICS_PARTITIONS_BY_TOPIC and OCRSTREAM_TOPICS_REPLICATION_FACTOR unless given here.",
    )
    c.add_argument("--partitions", type=int, default=None, help="partitions of every topic not set per topic")
    c.add_argument(
        "--topic-partitions",
        action="append",
        default=[],
        metavar="TOPIC=N",
        help="partitions of one topic (name without the prefix, e.g. page.rasterized=24); repeatable",
    )
    c.add_argument("--replication-factor", type=int, default=None, help="replication factor of new topics")
    c.add_argument(
        "--wait-s", type=float, default=0.0, help="retry this long while the broker is unreachable (a Job)"
    )
    c.set_defaults(func=cmd_create)
    k = tsub.add_parser("check", help="exit 1 listing the topics that are missing")
    k.set_defaults(func=cmd_check)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def create(
    partitions: int | None = None,
    topic_partitions: list[str] | None = None,
    replication_factor: int | None = None,
    wait_s: float = 0.0,
    env=None,  # noqa: ANN001 - Mapping[str, str] | None
):  # noqa: ANN201 - list[TopicState]
    """Apply the configured topic layout (flags over env); returns the topics' states."""
    from ocrstream.bus.kafka import create_topics
    from ocrstream.config import CommonConfig, TopicsConfig
    from ocrstream.errors import BusUnavailable
    from ocrstream.services.wiring import topic_layout

    common = CommonConfig.from_env(env)
    over = {}
    if partitions is not None:
        over["partitions"] = partitions
    if topic_partitions:
        over["partitions_by_topic"] = tuple(TopicsConfig.from_env(env).partitions_by_topic) + tuple(
            topic_partitions
        )
    if replication_factor is not None:
        over["replication_factor"] = replication_factor
    cfg = TopicsConfig.from_env(env, **over)
    layout = topic_layout(common.topic_prefix, cfg)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return create_topics(common.kafka_bootstrap, layout, cfg.replication_factor)
        except BusUnavailable as exc:
            if time.monotonic() >= deadline:
                raise
            print(f"ocrstream topics: {exc}; retrying", file=sys.stderr)
            time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))


def cmd_create(args: argparse.Namespace) -> int:
    from ocrstream.errors import OcrStreamError

    try:
        states = create(args.partitions, args.topic_partitions, args.replication_factor, args.wait_s)
    except (OcrStreamError, ValueError) as exc:
        print(f"ocrstream topics create: {exc}", file=sys.stderr)
        return 1
    for st in states:
        print(f"{st.name}\t{st.partitions} partitions\treplication {st.replication}\t{st.action}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ocrstream.bus.kafka import KafkaBus
    from ocrstream.config import CommonConfig
    from ocrstream.errors import OcrStreamError
    from ocrstream.services.wiring import all_topics

    common = CommonConfig.from_env()
    topics = all_topics(common.topic_prefix)
    try:
        missing = KafkaBus(common.kafka_bootstrap, "ocrstream-topics").missing_topics(topics)
    except OcrStreamError as exc:
        print(f"ocrstream topics check: {exc}", file=sys.stderr)
        return 1
    if missing:
        print(
            f"missing topics: {' '.join(missing)} (create them with `ocrstream topics create`)",
            file=sys.stderr,
        )
        return 1
    print(f"all {len(topics)} topics present")
    return 0
