"""``driftwire reference build``: learn a model's reference profile from a file or a topic range.

The profile (quantile bins, category counts, moments, missing rates per feature and for the
prediction) is what every window is compared with. It is written as schemaless Avro
(`schemas/ReferenceProfile.avsc`) to a file, or published to the compacted references topic
keyed by model id, so the latest profile per model is what the topic keeps.

Reading a topic range is bounded: the end offsets are fixed when the read starts (see
:class:`~driftwire.streams.replay.TopicRange`), so a live topic does not make it endless.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the engine pulls in river and scipy: import it only when a command runs
    from driftwire.detectors.batch import FeatureBatch
    from driftwire.detectors.config import ModelConfig
    from driftwire.detectors.reference import (
        CategoricalReference,
        NumericReference,
        ReferenceProfile,
    )
    from driftwire.schemas.serde import Codec
    from driftwire.streams.config import StreamsConfig
    from driftwire.streams.replay import PartitionRange

log = logging.getLogger(__name__)

app = typer.Typer(help="Reference profiles: the baseline each window is compared with.")


# Workers read the references topic every second; a minute's lead means every worker has
# the profile before the first event it applies to arrives (see docs/concepts.md).
DEFAULT_LEAD_MS = 60_000


class ReferenceBuildError(RuntimeError):
    """The reference cannot be built or delivered; the message says why."""


class BrokerUnreachable(ReferenceBuildError):
    """No metadata from the broker within the timeout."""


@dataclass(frozen=True)
class TopicRead:
    """What to read: topic, time range (epoch ms, None = open) and how to reach Kafka."""

    topic: str
    start_ms: int | None
    end_ms: int | None
    kafka: dict[str, Any]
    codec: Codec
    timeout: float = 10.0


def parse_time(text: str | None, now_ms: int, hint: str) -> int | None:
    """ISO-8601 time, epoch ms, or a duration ago ("2h"); None stays None."""
    from driftwire.detectors.config import parse_duration
    from driftwire.detectors.scoring import parse_time_ms

    if text is None:
        return None
    try:
        return parse_time_ms(text)
    except ValueError:
        pass
    try:
        return now_ms - int(parse_duration(text))
    except (ValueError, TypeError):
        raise typer.BadParameter(
            "expected an ISO time (2026-12-03T10:00), epoch ms, or a duration ago like 2h",
            param_hint=hint,
        ) from None


def parse_effective(text: str | None, now_ms: int) -> int:
    """When running workers switch: ISO time, epoch ms, or a delay from now ("5m")."""
    from driftwire.detectors.config import parse_duration
    from driftwire.detectors.scoring import parse_time_ms

    if text is None:
        return now_ms + DEFAULT_LEAD_MS
    try:
        return parse_time_ms(text)
    except ValueError:
        pass
    try:
        return now_ms + int(parse_duration(text.removeprefix("+")))
    except (ValueError, TypeError):
        raise typer.BadParameter(
            "expected an ISO time (2026-12-03T10:00), epoch ms, or a delay like 5m",
            param_hint="--effective-from",
        ) from None


def check_topics(kafka: dict[str, Any], names: list[str], timeout: float) -> None:
    """Fail fast, with a plain message, when the broker or a topic is not there."""
    from driftwire.streams.alerts_reader import QUIET_CLIENT_LOG  # librdkafka: quiet retries

    admin = AdminClient({**kafka, "logger": QUIET_CLIENT_LOG})
    try:
        topics = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerUnreachable(f"cannot reach the broker: {exc.args[0].str()}") from None
    missing = [n for n in names if n not in topics]
    if missing:
        raise ReferenceBuildError(
            f"topic {missing[0]} does not exist (create it with `driftwire topics create`)"
        )


def read_topic_batch(read: TopicRead, model: ModelConfig) -> tuple[FeatureBatch | None, int]:
    """The model's events in the range as one batch (None if none), and undecodable count."""
    from driftwire.detectors.batch import FeatureBatch
    from driftwire.streams.replay import TopicRange, concat_features, topic_steps

    check_topics(read.kafka, [read.topic], read.timeout)
    bad = 0

    def decode(values: list[bytes | None], prange: PartitionRange, offsets: list[int]) -> list:
        nonlocal bad
        records, errors = read.codec.decode_many(
            values, topic=prange.topic, partition=prange.partition, offsets=offsets
        )
        bad += len(errors)
        dropped = {e.index for e in errors}
        good = [o for i, o in enumerate(offsets) if i not in dropped]
        kept = []
        for record, offset in zip(records, good, strict=True):
            if record["model_id"] == model.id:
                record["_offset"] = offset  # the merger needs the offsets of what it kept
                kept.append(record)
        return kept

    numeric = None if model.numeric == "infer" else model.numeric
    categorical = None if model.categorical == "infer" else model.categorical
    segment = model.segments.key if model.segments else None
    replay = TopicRange(read.kafka, read.topic, start_ms=read.start_ms, end_ms=read.end_ms)
    batches = [
        FeatureBatch.from_records(records, numeric, categorical, segment)
        for step in topic_steps(replay, decode)
        for _partition, records, _next in step.records
        if records
    ]
    return (concat_features(batches) if batches else None), bad


def publish(
    profile: ReferenceProfile,
    topic: str,
    kafka: dict[str, Any],
    timeout: float,
    effective_from: int | None = None,
) -> None:
    """Send the profile to the compacted references topic, keyed by model id; wait for the ack.

    Running workers switch to it at the first window boundary at or after `effective_from`
    (epoch ms; default: the publish time)."""
    from driftwire.detectors.timeline import EFFECTIVE_FROM_HEADER
    from driftwire.streams.alerts_reader import QUIET_CLIENT_LOG  # librdkafka: quiet retries

    check_topics(kafka, [topic], timeout)
    failures: list[str] = []

    def delivered(error: Any, _msg: Any) -> None:
        if error is not None:
            failures.append(error.str())

    producer = Producer({**kafka, "logger": QUIET_CLIENT_LOG, "acks": "all"})
    producer.produce(
        topic,
        profile.to_bytes(),
        key=profile.model_id.encode(),
        headers={
            "driftwire.reference_id": profile.reference_id.encode(),
            **({EFFECTIVE_FROM_HEADER: str(effective_from).encode()} if effective_from else {}),
        },
        on_delivery=delivered,
    )
    if producer.flush(timeout) > 0:
        raise ReferenceBuildError(f"reference not acknowledged by the broker within {timeout}s")
    if failures:
        raise ReferenceBuildError(f"reference not published: {failures[0]}")


def _numeric_row(kind: str, ref: NumericReference) -> tuple[str, ...]:
    total = ref.count + ref.missing + ref.nonfinite
    missing = (ref.missing + ref.nonfinite) / total if total else 0.0
    shape = f"mean {ref.mean:.4g} sd {ref.std:.4g} [{ref.min:.4g}, {ref.max:.4g}]"
    return ref.name, kind, str(total), f"{missing:.1%}", f"{len(ref.edges) - 1} bins; {shape}"


def _categorical_row(kind: str, ref: CategoricalReference) -> tuple[str, ...]:
    total = ref.count + ref.missing
    missing = ref.missing / total if total else 0.0
    top = ""
    if len(ref.categories):
        i = int(ref.counts[:-1].argmax())
        top = f"; top {ref.categories[i]!s} {ref.counts[i] / max(ref.count, 1):.0%}"
    return ref.name, kind, str(total), f"{missing:.1%}", f"{len(ref.categories)} categories{top}"


def print_summary(profile: ReferenceProfile, out: Console) -> None:
    created = dt.datetime.fromtimestamp(profile.created_at / 1000, dt.UTC).isoformat()
    out.print(f"reference {profile.reference_id}: model {profile.model_id}, "
              f"{profile.count} events, latest event {created}")  # fmt: skip
    table = Table("feature", "kind", "events", "missing", "learned")
    for ref in profile.numeric.values():
        table.add_row(*_numeric_row("numeric", ref))
    for cat in profile.categorical.values():
        table.add_row(*_categorical_row("categorical", cat))
    if profile.score is not None:
        table.add_row(*_numeric_row("prediction", profile.score))
    if profile.label is not None:
        table.add_row(*_categorical_row("prediction", profile.label))
    out.print(table)


def _model(config: Path, model_id: str) -> ModelConfig:
    from driftwire.detectors.config import ConfigError, load_config

    try:
        engine = load_config(config)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    try:
        return engine.model(model_id)
    except KeyError:
        known = ", ".join(m.id for m in engine.models)
        raise typer.BadParameter(f"no model {model_id!r} in {config} (has: {known})",
                                 param_hint="--model") from None  # fmt: skip


def _streams(config: Path, bootstrap: str | None) -> StreamsConfig:
    from driftwire.streams.config import StreamsConfig

    try:
        streams = StreamsConfig.load(config)
    except (ValueError, TypeError) as exc:  # StreamsConfigError is a ValueError
        raise typer.BadParameter(f"{exc} (a topic source or --publish needs kafka/topics)",
                                 param_hint="--config") from None  # fmt: skip
    if bootstrap:
        kafka = streams.kafka.replace(bootstrap_servers=bootstrap)
        streams = StreamsConfig(kafka, streams.topics, streams.worker)
    return streams


def _features_codec(streams: StreamsConfig) -> Codec:
    from driftwire.schemas.serde import Codec

    topic = streams.topics.features
    if topic.format != "confluent":
        return Codec("FeatureEvent", topic.format)
    from confluent_kafka.schema_registry import SchemaRegistryClient

    url = streams.worker.schema_registry_url
    registry = SchemaRegistryClient({"url": url}) if url else None
    return Codec("FeatureEvent", "confluent", registry=registry, subject=f"{topic.name}-value")


def _kafka(streams: StreamsConfig, timeout: float) -> dict[str, Any]:
    return {**streams.kafka.confluent_config(), "socket.timeout.ms": int(timeout * 1000)}


def _build(
    model: ModelConfig,
    from_file: Path | None,
    topic_read: Callable[[], TopicRead] | None,
    out: Console,
) -> ReferenceProfile:
    from driftwire.detectors.reference import ReferenceProfile

    if from_file is not None:
        try:
            return ReferenceProfile.from_file(from_file, model)
        except (ValueError, KeyError, OSError) as exc:
            raise ReferenceBuildError(f"{from_file}: {exc}") from None
    assert topic_read is not None
    read = topic_read()
    batch, bad = read_topic_batch(read, model)
    if bad:
        out.print(f"{bad} undecodable messages skipped (see the worker's dead-letter topic)")
    if batch is None:
        raise ReferenceBuildError(f"no events of model {model.id} in {read.topic} in that range")
    try:
        return ReferenceProfile.from_batch(batch, model)
    except ValueError as exc:
        raise ReferenceBuildError(f"{read.topic}: {exc}") from None


@app.command("build")
def build(
    config: Path = typer.Option(
        ..., "--config", "-c", exists=True, dir_okay=False, help="driftwire config file."
    ),
    model_id: str = typer.Option(..., "--model", "-m", help="Model id (from the config)."),
    from_file: Path | None = typer.Option(
        None,
        "--from-file",
        exists=True,
        dir_okay=False,
        help="Parquet/CSV/JSONL/Avro file of past events (flat or FeatureEvent-shaped).",
    ),
    from_topic: bool = typer.Option(
        False, "--from-topic", help="Read a time range of the features topic (or --topic)."
    ),
    topic: str | None = typer.Option(
        None, "--topic", help="Topic to read (default: the model's reference.topic, else features)."
    ),
    start: str | None = typer.Option(
        None, "--start", help="Range start: ISO time, epoch ms or a duration ago (default: oldest)."
    ),
    end: str | None = typer.Option(
        None, "--end", help="Range end, same forms (default: now, fixed when the read starts)."
    ),
    out_file: Path | None = typer.Option(
        None, "--out", "-o", dir_okay=False, help="Write the profile (Avro) to this file."
    ),
    publish_it: bool = typer.Option(
        False, "--publish", help="Publish to the compacted references topic, keyed by model id."
    ),
    effective_from: str | None = typer.Option(
        None,
        "--effective-from",
        help="With --publish: when running workers switch to this profile -- ISO time, epoch "
        "ms, or a delay like 5m (default: 1m from now). The switch is at the first window "
        "boundary at or after it; workers of a new app id start with the latest profile.",
    ),
    bootstrap: str | None = typer.Option(
        None, "--bootstrap", help="Kafka bootstrap servers (overrides config and env)."
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the broker."),
) -> None:
    """Learn a model's reference profile from a file or a topic range; write or publish it."""
    from driftwire.detectors.scoring import parse_time_ms

    if (from_file is None) == (not from_topic):
        raise typer.BadParameter("give exactly one of --from-file PATH or --from-topic")
    if out_file is None and not publish_it:
        raise typer.BadParameter("give --out FILE and/or --publish")
    if from_file is not None and (start or end or topic):
        raise typer.BadParameter("--start/--end/--topic go with --from-topic, not --from-file")
    if effective_from is not None and not publish_it:
        raise typer.BadParameter("--effective-from goes with --publish")
    effective_ms = parse_effective(effective_from, int(dt.datetime.now(dt.UTC).timestamp() * 1000))
    model = _model(config, model_id)
    streams = _streams(config, bootstrap) if (from_topic or publish_it) else None
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)

    def topic_read() -> TopicRead:
        assert streams is not None
        ref = model.reference
        start_ms = parse_time(start, now_ms, "--start")
        end_ms = parse_time(end, now_ms, "--end")
        if start is None and ref.start is not None:
            start_ms = parse_time_ms(ref.start)
        if end is None and ref.end is not None:
            end_ms = parse_time_ms(ref.end)
        name = topic or ref.topic or streams.topics.features.name
        codec = _features_codec(streams)
        return TopicRead(name, start_ms, end_ms, _kafka(streams, timeout), codec, timeout)

    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        profile = _build(model, from_file, topic_read if from_topic else None, err)
        print_summary(profile, out)
        if out_file is not None:
            out_file.write_bytes(profile.to_bytes())
            out.print(f"wrote {out_file}", markup=False)
        if publish_it:
            assert streams is not None and streams.topics.references is not None
            name = streams.topics.references.name
            publish(profile, name, _kafka(streams, timeout), timeout, effective_ms)
            when = dt.datetime.fromtimestamp(effective_ms / 1000, dt.UTC).isoformat()
            out.print(
                f"published to {name} (key {profile.model_id}); running workers switch at "
                f"the first window boundary at or after {when}",
                markup=False,
            )
    except BrokerUnreachable as exc:
        assert streams is not None
        err.print(f"error: {exc} (bootstrap {streams.kafka.bootstrap_servers})", markup=False)
        raise typer.Exit(2) from None
    except ReferenceBuildError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(1) from None
