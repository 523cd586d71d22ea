"""``driftwire topics create``: the topics a config needs, idempotently.

For a secured cluster where workers may not create topics, an operator runs this once with
admin rights. Data topics (features, outcomes) get ``--partitions`` (the unit of scaling:
at most one busy worker per partition) and outcomes the same count as features, so the
join stays co-partitioned. Alerts and dead letter default to one partition. References and
checkpoints are compacted (latest value per key is what a worker reads at start); the
worker's partials topic follows the features count unless `worker.internal_partitions` says
otherwise. A topic that exists with the expected partition count is left alone ("exists");
one with another count, or a compacted one that is not compacted, is reported and the exit
code is 1: repartitioning would move keys between partitions, so driftwire never does it.

>>> from driftwire.streams.config import StreamsConfig
>>> cfg = StreamsConfig.from_dict({"topics": {"features": "f", "alerts": "a"}}, env={})
>>> plan = plan_topics(cfg, partitions=3)
>>> [(t.role, t.partitions, t.compact) for t in plan]  # doctest: +NORMALIZE_WHITESPACE
[('features', 3, False), ('alerts', 1, False), ('dead_letter', 1, False),
 ('references', 1, True), ('partials', 3, False), ('checkpoints', 1, True)]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType
from driftwire.streams.admin import wait_for_leaders
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the engine pulls in river and scipy: import it only when a command runs
    from driftwire.streams.config import StreamsConfig

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 6
app = typer.Typer(help="Kafka topics for a driftwire config.", no_args_is_help=True)


@dataclass(frozen=True)
class PlannedTopic:
    """One topic the config needs, as it should be created."""

    role: str  # features, outcomes, alerts, dead_letter, references, partials, checkpoints
    name: str
    partitions: int
    compact: bool = False
    retention_ms: int | None = None  # None: broker default; never set on compacted topics
    replication_factor: int = -1  # -1: broker default

    def new_topic(self) -> NewTopic:
        config = {"cleanup.policy": "compact" if self.compact else "delete"}
        if self.retention_ms is not None and not self.compact:
            config["retention.ms"] = str(self.retention_ms)
        return NewTopic(self.name, self.partitions, self.replication_factor, config=config)


@dataclass(frozen=True)
class TopicOutcome:
    topic: PlannedTopic
    action: str  # created, exists, would create, mismatch, failed
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.action in ("created", "exists", "would create")


def plan_topics(
    streams: StreamsConfig,
    partitions: int | None = None,
    replication_factor: int = -1,
    retention_ms: int | None = None,
) -> list[PlannedTopic]:
    """Every topic `streams` uses, with its partition count and cleanup policy."""
    topics, worker = streams.topics, streams.worker
    data = partitions or topics.features.partitions or DEFAULT_PARTITIONS
    wanted: list[tuple[str, str, int, bool]] = [("features", topics.features.name, data, False)]
    if topics.outcomes is not None:
        wanted.append(("outcomes", topics.outcomes.name, data, False))
    wanted += [
        ("alerts", topics.alerts.name, topics.alerts.partitions or 1, False),
        ("dead_letter", topics.dead_letter.name, topics.dead_letter.partitions or 1, False),
    ]
    if topics.references is not None:
        wanted.append(("references", topics.references.name, 1, True))
    wanted += [
        ("partials", worker.partials_topic, worker.internal_partitions or data, False),
        ("checkpoints", worker.checkpoint_topic, 1, True),
    ]
    return [
        PlannedTopic(role, name, n, compact, retention_ms, replication_factor)
        for role, name, n, compact in wanted
    ]


class BrokerUnreachable(RuntimeError):
    """No metadata from the broker within the timeout."""


def _existing(admin: AdminClient, timeout: float) -> dict[str, int]:
    try:
        topics = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerUnreachable(f"cannot reach the broker: {exc.args[0].str()}") from None
    return {name: len(meta.partitions) for name, meta in topics.items() if meta.error is None}


def _cleanup_policies(admin: AdminClient, names: list[str], timeout: float) -> dict[str, str]:
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in names]
    policies = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        entries = future.result(timeout=timeout)
        policies[resource.name] = entries["cleanup.policy"].value
    return policies


def _check_existing(
    plan: list[PlannedTopic], existing: dict[str, int], admin: AdminClient, timeout: float
) -> dict[str, TopicOutcome]:
    found = [t for t in plan if t.name in existing]
    policies = _cleanup_policies(admin, [t.name for t in found if t.compact], timeout)
    outcomes = {}
    for topic in found:
        have = existing[topic.name]
        policy = policies.get(topic.name, "compact")
        if have != topic.partitions:
            detail = f"has {have} partitions, expected {topic.partitions}"
            outcomes[topic.name] = TopicOutcome(topic, "mismatch", detail)
        elif topic.compact and "compact" not in policy:
            detail = f"cleanup.policy is {policy}, expected compact"
            outcomes[topic.name] = TopicOutcome(topic, "mismatch", detail)
        else:
            outcomes[topic.name] = TopicOutcome(topic, "exists")
    return outcomes


def _create(admin: AdminClient, missing: list[PlannedTopic], timeout: float) -> list[TopicOutcome]:
    if not missing:
        return []
    futures = admin.create_topics([t.new_topic() for t in missing], operation_timeout=timeout)
    outcomes = []
    for topic in missing:
        try:
            futures[topic.name].result(timeout=timeout)
            outcomes.append(TopicOutcome(topic, "created"))
        except KafkaException as exc:
            error = exc.args[0]
            if error.name() == "TOPIC_ALREADY_EXISTS":  # another operator or worker was faster
                outcomes.append(TopicOutcome(topic, "exists"))
            else:
                outcomes.append(TopicOutcome(topic, "failed", error.str()))
    created = [o.topic.name for o in outcomes if o.action == "created"]
    if created:
        wait_for_leaders(admin, created, timeout)
    return outcomes


def ensure_planned(
    admin: AdminClient, plan: list[PlannedTopic], dry_run: bool = False, timeout: float = 10.0
) -> list[TopicOutcome]:
    """Create what is missing (unless `dry_run`); report every topic of `plan` in order."""
    existing = _existing(admin, timeout)
    done = _check_existing(plan, existing, admin, timeout)
    missing = [t for t in plan if t.name not in done]
    if dry_run:
        done |= {t.name: TopicOutcome(t, "would create") for t in missing}
    else:
        done |= {o.topic.name: o for o in _create(admin, missing, timeout)}
    return [done[t.name] for t in plan]


ACTION_STYLE = {"created": "green", "exists": "dim", "would create": "cyan"}


def _print(outcomes: list[TopicOutcome], out: Console) -> None:
    table = Table("role", "topic", "partitions", "cleanup", "result")
    for o in outcomes:
        style = ACTION_STYLE.get(o.action, "bold red")
        result = f"[{style}]{o.action}[/]" + (f" ({o.detail})" if o.detail else "")
        cleanup = "compact" if o.topic.compact else "delete"
        table.add_row(o.topic.role, o.topic.name, str(o.topic.partitions), cleanup, result)
    out.print(table)


def _load(config: Path, bootstrap: str | None) -> StreamsConfig:
    from driftwire.streams.config import StreamsConfig

    try:
        streams = StreamsConfig.load(config)
    except (OSError, ValueError, TypeError) as exc:  # StreamsConfigError is a ValueError
        hint = f"{exc} (see `driftwire validate-config {config}`)"
        raise typer.BadParameter(hint, param_hint="--config") from None
    if bootstrap:
        streams = StreamsConfig(
            streams.kafka.replace(bootstrap_servers=bootstrap), streams.topics, streams.worker
        )
    return streams


def _retention(text: str | None) -> int | None:
    from driftwire.detectors.config import parse_duration

    if text is None:
        return None
    try:
        ms = parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--retention") from None
    if not isinstance(ms, int) or ms <= 0:
        raise typer.BadParameter("expected a duration like 7d or 12h", param_hint="--retention")
    return ms


@app.command("create")
def create(
    config: Path = typer.Option(
        ..., "--config", "-c", exists=True, dir_okay=False, help="driftwire config file."
    ),
    partitions: int | None = typer.Option(
        None,
        "--partitions",
        min=1,
        help=f"Features/outcomes partitions (default: topics.features.partitions, else "
        f"{DEFAULT_PARTITIONS}). Workers scale up to this many.",
    ),
    replication_factor: int = typer.Option(
        -1, "--replication-factor", help="Replicas per partition (-1: the broker's default)."
    ),
    retention: str | None = typer.Option(
        None, "--retention", help="retention.ms of non-compacted topics, e.g. 7d (default: broker)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be created; change nothing."
    ),
    bootstrap: str | None = typer.Option(
        None, "--bootstrap", help="Kafka bootstrap servers (overrides config and env)."
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the broker."),
) -> None:
    """Create the topics a config needs (idempotent; a second run says "exists")."""
    if replication_factor == 0 or replication_factor < -1:
        raise typer.BadParameter(
            "expected >= 1, or -1 for the broker default", param_hint="--replication-factor"
        )
    streams = _load(config, bootstrap)
    plan = plan_topics(streams, partitions, replication_factor, _retention(retention))
    from driftwire.streams.alerts_reader import QUIET_CLIENT_LOG  # librdkafka: quiet retries

    admin = AdminClient(
        {
            **streams.kafka.confluent_config(),
            "logger": QUIET_CLIENT_LOG,
            "socket.timeout.ms": int(timeout * 1000),
        }
    )
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        outcomes = ensure_planned(admin, plan, dry_run, timeout)
    except BrokerUnreachable as exc:
        err.print(f"error: {exc} (bootstrap {streams.kafka.bootstrap_servers})", markup=False)
        raise typer.Exit(2) from None
    _print(outcomes, Console(highlight=False, soft_wrap=True))
    bad = [o for o in outcomes if not o.ok]
    for o in bad:
        err.print(f"{o.topic.name}: {o.action}: {o.detail}", markup=False)
    if bad:
        err.print(f"{len(bad)} topic(s) differ from the config; driftwire never repartitions")
        raise typer.Exit(1)
