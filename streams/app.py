"""The `driftwire worker` process: Kafka in, stages of :mod:`driftwire.streams.worker`, alerts out.

One consumer (group = ``worker.group_id``) subscribes to the features topic, the
outcomes topic (when a model has concept drift on) and the internal
``<app_id>-partials`` topic; Kafka's range assignor spreads them over the workers. Per
consumed batch:

- features partition -> decode (DLQ for bad bytes and unknown models) -> stage 1
  profiler -> final pane partials (and, for concept models, the pane's prediction
  columns) to ``<app_id>-partials``, keyed by model id;
- outcomes partition -> decode -> the pane's outcome columns, the same way;
- partials partition -> stage 2 merger per model (profiles merged, predictions joined
  with outcomes) -> ``DriftAlert`` events, keyed by model id, to the alerts topic.

The label join runs per model in stage 2 rather than on a topic re-keyed by prediction
id: it is fed whole panes in (event time, prediction id) order, which makes its result
independent of how partitions interleave (same alert ids with 1 or N workers, after a
crash); the price is one model's pending labels living on one worker.

State lives in the compacted ``<app_id>-checkpoints`` topic, one key per input
partition, written at window boundaries after the outputs they cover were flushed. A
worker that gains a partition (start, rebalance, restart after SIGKILL) reads the
checkpoint and seeks to the offset it covers; replay then reproduces the same
partials and alerts (deterministic ids), see :mod:`driftwire.streams.worker`.

Why confluent-kafka and not a faust agent (the issue asked for a faust app): measured
by ``python bench/e2e.py --faust`` on this 2-core machine, a bare faust-streaming 0.15.3
agent doing nothing but ``stream.take(10_000, within=0.5)`` over 200,000 messages got
~6,000-7,000 messages/s -- faust runs several event-loop turns per message -- while
confluent-kafka's ``consume(10_000)`` delivers ~450,000/s and aiokafka's ``getmany``
~190,000/s, and the fastavro decode alone runs at ~26,000-35,000 events/s. A faust agent
would cap the worker at a quarter of its decode ceiling, so the hot path is a plain batch
loop, and faust's changelog tables are replaced by the explicit checkpoint topic above
(same recovery model: state + offset restored on assignment, outputs idempotent).
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from driftwire.detectors.alerts import Alert
from driftwire.detectors.batch import FeatureBatch
from driftwire.detectors.config import EngineConfig, ModelConfig
from driftwire.detectors.reference import ReferenceProfile
from driftwire.detectors.shadow import challengers_of
from driftwire.detectors.timeline import ReferenceTimeline
from driftwire.schemas.records import alert_to_record
from driftwire.schemas.serde import Codec
from driftwire.streams.admin import TopicSpec, ensure_topics, partition_counts
from driftwire.streams.config import StreamsConfig, TopicConfig
from driftwire.streams.dlq import DeadLetter, DeadLetterWriter
from driftwire.streams.groupwatch import GroupWatch
from driftwire.streams.metrics import MetricsServer, WorkerMetrics
from driftwire.streams.references import PublishedReference, ReferenceWatcher
from driftwire.streams.worker import (
    FEATURES,
    OUTCOMES,
    ModelMerger,
    PartialReport,
    PartitionProfiler,
    StageMonitor,
    Timing,
    decode_checkpoint,
    encode_checkpoint,
    feature_batch,
    split_future,
)

log = logging.getLogger(__name__)

# Checkpoints carry monitor snapshots (with the label join's pending predictions) and
# reports carry a pane's prediction columns: far over Kafka's 1 MB default.
INTERNAL_MESSAGE_BYTES = 64 * 1024 * 1024
REFERENCES_KEY = "references:"  # + model id: a model's reference timeline, checkpoint topic


class WorkerError(RuntimeError):
    """A failure the worker must not ride out: bad credentials, refused or expired writes.

    The worker stops without checkpointing past the failed output, so a restart (once
    the cause is fixed) replays and re-publishes it: nothing is dropped quietly.
    """


@dataclass(frozen=True)
class ModelEngine:
    """How to build (or restore) the engine monitor of one model, and how to batch its events."""

    config: ModelConfig
    new: Callable[[], StageMonitor]
    restore: Callable[[bytes], StageMonitor]
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    reference: ReferenceProfile | None = None  # the one read at start
    build: Callable[[ReferenceProfile], StageMonitor] | None = None  # against another one

    @property
    def follows_topic(self) -> bool:
        """Does the model switch references when a new one is published (not versioned)?"""
        return self.config.reference.source == "topic" and self.config.versions is None

    @property
    def timing(self) -> Timing:
        window = self.config.window
        return Timing(int(window.hop or window.size), window.allowed_lateness)

    def batch(self, records: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        segment = self.config.segments.key if self.config.segments else None
        return feature_batch(records, self.numeric, self.categorical, segment)


def build_engines(
    engine: EngineConfig, streams: StreamsConfig | None = None
) -> dict[str, ModelEngine]:
    """One ModelEngine per configured model, with its reference read at start.

    Reference sources: ``file`` (events, profiled here), ``profile`` (a profile built by
    `driftwire reference build --out`) or ``topic`` (the latest profile of the model id on
    the compacted references topic, `reference build --publish`; needs `streams`). Every
    worker must bin against the same reference, hence no ``first_n`` here. A model with
    `versions:` gets a `VersionRegistry` (a monitor per version, roll-outs as lifecycle
    alerts) instead of a plain `Monitor`.
    """
    from driftwire.detectors.monitor import Monitor
    from driftwire.detectors.versions import VersionRegistry

    published = _published_references(engine, streams)
    engines = {}
    for cfg in engine.models:
        ref = _reference(cfg, published)
        kind: Any = VersionRegistry if cfg.versions is not None else Monitor
        engines[cfg.id] = ModelEngine(
            config=cfg,
            new=lambda cfg=cfg, ref=ref, kind=kind: kind(cfg, ref),
            restore=kind.restore,
            numeric=tuple(ref.numeric),
            categorical=tuple(ref.categorical),
            reference=ref,
            build=lambda other, cfg=cfg, kind=kind: kind(cfg, other),
        )
    return engines


def _reference(cfg: ModelConfig, published: Mapping[str, bytes]) -> ReferenceProfile:
    source = cfg.reference.source
    if source == "file":
        return ReferenceProfile.from_file(str(cfg.reference.path), cfg)
    if source == "profile":
        return ReferenceProfile.from_bytes(Path(str(cfg.reference.path)).read_bytes())
    if source == "topic":
        if cfg.id not in published:
            raise ValueError(
                f"model {cfg.id}: no profile on the references topic; publish one with "
                f"`driftwire reference build --model {cfg.id} ... --publish`"
            )
        ref = ReferenceProfile.from_bytes(published[cfg.id])
        log.info("model %s: reference %s from the references topic", cfg.id, ref.reference_id)
        return ref
    raise ValueError(
        f"model {cfg.id}: the worker needs reference.source file, profile or topic "
        f"(got {source!r}); build a profile with `driftwire reference build`"
    )


def _published_references(engine: EngineConfig, streams: StreamsConfig | None) -> dict[str, bytes]:
    """Latest profile bytes per model id on the references topic (only when one is wanted)."""
    wanted = [m.id for m in engine.models if m.reference.source == "topic"]
    if not wanted:
        return {}
    if streams is None or streams.topics.references is None:
        raise ValueError(f"models {wanted}: reference.source topic needs the kafka/topics sections")
    topic = streams.topics.references.name
    return latest_by_key(streams.kafka.confluent_config(), topic, wanted)


def latest_by_key(
    kafka_config: Mapping[str, Any], topic: str, keys: Iterable[str], timeout: float = 60
) -> dict[str, bytes]:
    """The latest value of each wanted key on a one-partition compacted topic (read to its end)."""
    return read_latest(kafka_config, topic, keys, timeout)[0]


def read_latest(
    kafka_config: Mapping[str, Any], topic: str, keys: Iterable[str], timeout: float = 60
) -> tuple[dict[str, bytes], int]:
    """`latest_by_key`, and the end offset it read up to."""
    wanted, found = set(keys), {}
    reader = Consumer({**kafka_config, "group.id": "unused", "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic, 0, OFFSET_BEGINNING)
        end = _end_offset(reader, tp)
        reader.assign([tp])
        position, deadline = 0, time.monotonic() + timeout
        while position < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic}: stuck at {position}/{end}")
            for msg in reader.consume(10_000, 1.0):
                if msg.error():
                    continue
                position = msg.offset() + 1
                key = (msg.key() or b"").decode()
                if key in wanted:
                    found[key] = msg.value()
    finally:
        reader.close()
    return found, end


class CheckpointStore:
    """The compacted checkpoint topic: one key per input partition, the latest value wins."""

    def __init__(self, kafka_config: dict[str, str], topic: str, producer: Producer) -> None:
        self.kafka_config = kafka_config
        self.topic = topic
        self.producer = producer

    def save(self, key: str, state: Mapping[str, Any]) -> None:
        self.producer.produce(self.topic, value=encode_checkpoint(state), key=key.encode())

    def load(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Latest checkpoint of each wanted key (reads the topic to its end)."""
        found = latest_by_key(self.kafka_config, self.topic, keys)
        return {key: decode_checkpoint(value) for key, value in found.items()}


class Worker:
    """One `driftwire worker` process. `run()` blocks until SIGTERM/SIGINT or `stop()`."""

    def __init__(
        self,
        streams: StreamsConfig,
        engines: Mapping[str, ModelEngine],
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.cfg = streams
        self.engines = engines
        self.metrics = metrics or WorkerMetrics()
        self.topics = streams.topics
        self.partials_topic = streams.worker.partials_topic
        self.profilers: dict[tuple[str, int], PartitionProfiler] = {}  # features / outcomes
        self.mergers: dict[int, dict[str, ModelMerger]] = {}  # partials partition -> model
        self.offsets: dict[tuple[str, int], int] = {}  # next offset per owned partition
        self._stopping = False
        self.failure: str | None = None  # set by a Kafka callback; run() raises it
        base = streams.kafka.confluent_config()
        self.kafka_config = base
        self.producer = Producer(
            {
                **base,
                "linger.ms": 5,
                "queue.buffering.max.messages": 500_000,
                "message.max.bytes": INTERNAL_MESSAGE_BYTES,
                "error_cb": self._on_kafka_error,
                "on_delivery": self._on_delivery,
                "delivery.report.only.error": True,
            }
        )
        self.dlq = DeadLetterWriter(self.producer, self.topics.dead_letter.name)
        self.checkpoints = CheckpointStore(base, streams.worker.checkpoint_topic, self.producer)
        registry = _registry(streams.worker.schema_registry_url)
        self.concept_models = frozenset(m for m, e in engines.items() if e.config.concept)
        self.shadows = challengers_of([e.config for e in engines.values()])
        # models whose prediction rows stage 2 needs: label join, shadow pairs (both sides)
        shadowing = {c for cs in self.shadows.values() for c in cs} | set(self.shadows)
        self.row_models = self.concept_models | frozenset(shadowing & set(engines))
        outcomes = self.topics.outcomes if self.concept_models else None
        self.outcomes_topic = outcomes.name if outcomes else None
        self.codecs = {
            self.topics.features.name: _codec("FeatureEvent", self.topics.features, registry)
        }
        if outcomes:
            self.codecs[outcomes.name] = _codec("OutcomeEvent", outcomes, registry)
        elif self.concept_models:
            log.warning(
                "models %s have concept drift on but topics.outcomes is not set",
                sorted(self.concept_models),
            )
        self.alerts_codec = _codec("DriftAlert", self.topics.alerts, registry)
        self.features_partitions, self.outcome_partitions = self._prepare_topics()
        self.timelines, self.references = self._follow_references()
        # out of the group for longer than a session and a rebalance may take: replace it
        rejoin_s = max(60.0, 2 * streams.worker.session_timeout_ms / 1000)
        self.group_watch = GroupWatch(rejoin_s)
        self.generation_ = 0  # of the current consumer (stats of replaced ones are ignored)
        self.consumer_: Consumer | None = None
        self.profile_monitors = {m: self._new_monitor(m) for m in engines}  # pure profile()

    # -- setup --------------------------------------------------------------------------------

    def _prepare_topics(self) -> tuple[int, int]:
        """Create the internal topics; the partition counts of features and outcomes."""
        admin = self._connect()
        inputs = list(self.codecs)
        counts = partition_counts(admin, inputs)
        for topic in inputs:
            if topic not in counts:
                raise RuntimeError(f"input topic {topic} does not exist")
        n = counts[self.topics.features.name]
        internal = self.cfg.worker.internal_partitions or n
        alerts = self.topics.alerts
        specs = [
            TopicSpec(self.partials_topic, internal, max_message_bytes=INTERNAL_MESSAGE_BYTES),
            TopicSpec(
                self.cfg.worker.checkpoint_topic,
                1,
                compact=True,
                max_message_bytes=INTERNAL_MESSAGE_BYTES,
            ),
        ]
        existing = partition_counts(admin, [alerts.name, self.topics.dead_letter.name])
        for topic in (alerts, self.topics.dead_letter):
            if topic.name not in existing:
                specs.append(TopicSpec(topic.name, topic.partitions or 1))
        ensure_topics(admin, specs)
        return n, counts.get(self.outcomes_topic or "", 0)

    def _follow_references(self) -> tuple[dict[str, ReferenceTimeline], ReferenceWatcher | None]:
        """Timelines of the models following the references topic, and its watcher.

        A timeline saved on the checkpoint topic by any worker of this app wins over the
        topic's latest profile: it holds the switch times every worker must agree on."""
        models = [m for m, e in self.engines.items() if e.follows_topic]
        for m, e in self.engines.items():
            if e.config.reference.source == "topic" and not e.follows_topic:
                log.warning("model %s is versioned: a new reference applies at restart", m)
        if not models or self.topics.references is None:
            return {}, None
        topic = self.topics.references.name
        saved = self.checkpoints.load([REFERENCES_KEY + m for m in models])
        published, end = read_latest(self.kafka_config, topic, models)
        timelines = {}
        for m in models:
            state, engine = saved.get(REFERENCES_KEY + m), self.engines[m]
            if state is not None and state["hop"] == engine.timing.pane_ms:
                timelines[m] = ReferenceTimeline.from_state(state)
                continue
            if state is not None:  # switch times on another grid cannot be honoured
                log.warning("model %s: window hop changed, saved reference timeline dropped", m)
            ref = ReferenceProfile.from_bytes(published[m]) if m in published else engine.reference
            assert ref is not None
            timelines[m] = ReferenceTimeline(engine.timing.pane_ms, ref, offset_=end)
        start = min(t.offset_ for t in timelines.values())
        return timelines, ReferenceWatcher(self.kafka_config, topic, start)

    def _new_monitor(self, model_id: str) -> StageMonitor:
        """The model's monitor; one following the references topic has its timeline's
        switches scheduled, so its `profile` also picks each pane's reference."""
        engine, timeline = self.engines[model_id], self.timelines.get(model_id)
        if timeline is None:
            return engine.new()
        assert engine.build is not None
        monitor = engine.build(timeline.entries_[0][1])
        _catch_up(monitor, timeline)
        return monitor

    def _connect(self, timeout: float = 30) -> AdminClient:
        """An AdminClient that reached the cluster; bad credentials fail in about a second."""
        errors: list[KafkaError] = []
        admin = AdminClient({**self.kafka_config, "error_cb": errors.append})
        deadline = time.monotonic() + timeout
        while True:
            try:
                admin.list_topics(timeout=1)
                self.metrics.set_broker_up(True)
                return admin
            except KafkaException as exc:
                admin.poll(0)  # serves error_cb
                refused = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
                if refused:
                    kafka = self.cfg.kafka  # the reason is librdkafka's: it never holds the secret
                    raise WorkerError(
                        f"Kafka refused the credentials of user {kafka.sasl_username!r} "
                        f"({kafka.security_protocol} {kafka.sasl_mechanism}) at "
                        f"{kafka.bootstrap_servers}: {refused[-1].str()}"
                    ) from exc
                if time.monotonic() > deadline:
                    raise WorkerError(
                        f"cannot reach Kafka at {self.cfg.kafka.bootstrap_servers}: {exc}"
                    ) from exc

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self.kafka_config,
                "group.id": self.cfg.worker.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                "statistics.interval.ms": 5000,
                "session.timeout.ms": self.cfg.worker.session_timeout_ms,
                "heartbeat.interval.ms": max(self.cfg.worker.session_timeout_ms // 10, 100),
                "stats_cb": functools.partial(self._on_stats, self.generation_),
                "error_cb": functools.partial(self._on_consumer_error, self.generation_),
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                # an idle fetch must not hold back a pane report longer than a batch wait
                "fetch.wait.max.ms": max(self.cfg.worker.batch_timeout_ms, 10),
            }
        )

    # -- main loop ----------------------------------------------------------------------------

    def stop(self, *_: object) -> None:
        log.info("stop requested: finishing the batch in hand")
        self._stopping = True

    def run(self, install_signals: bool = True) -> None:
        if install_signals:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        consumer = self._subscribed_consumer()
        self.metrics.running = True
        batch_size, timeout = self.cfg.worker.batch_size, self.cfg.worker.batch_timeout_ms / 1000
        try:
            while not self._stopping:
                self.producer.poll(0)  # delivery failures surface now, not at the next flush
                self._raise_failure()
                if self.references is not None:
                    self._new_references(self.references.poll())
                if self.group_watch.overdue(time.monotonic()):
                    consumer = self._replace_consumer(consumer)
                messages = consumer.consume(batch_size, timeout)
                started = time.perf_counter()
                self._process(consumer, messages)
                self._tick(consumer)
                self.metrics.last_batch = time.monotonic()
                if messages:
                    self.metrics.batch_seconds.observe(time.perf_counter() - started)
        finally:
            self.metrics.running = False
            if not self.failure:  # never checkpoint past an output that did not get out
                self._checkpoint_all(consumer)
            consumer.close()  # leaves the group now, no session timeout wait
            if self.references is not None:
                self.references.close()
            self.producer.flush(30)
            log.info("worker stopped")

    def _subscribed_consumer(self) -> Consumer:
        self.generation_ += 1
        consumer = self._consumer()
        consumer.subscribe(
            [*self.codecs, self.partials_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.consumer_ = consumer
        return consumer

    def _replace_consumer(self, consumer: Consumer) -> Consumer:
        """A consumer out of its group too long while the broker answers: start a new one.

        What the old one still owns is checkpointed and forgotten; the new one joins the
        group and restores from the checkpoints, like a restarted worker. The old one is
        closed on a thread of its own, since a stuck client may not close promptly; its
        callbacks are ignored from now on."""
        out_for = self.group_watch.out_for(time.monotonic())
        self.group_watch.reset()
        try:
            self.producer.list_topics(timeout=5)
        except KafkaException:
            return consumer  # the broker is away: waiting is right, look again later
        log.warning(
            "the consumer has been out of group %s for %.0f s with the broker up: "
            "replacing it (state is restored from the checkpoints)",
            self.cfg.worker.group,
            out_for,
        )
        self.metrics.consumer_replaced.inc()
        self._checkpoint_all(consumer)
        self._drop([TopicPartition(t, p) for t, p in [*self.profilers, *self._owned_partials()]])
        threading.Thread(target=_close_quietly, args=(consumer,), daemon=True).start()
        return self._subscribed_consumer()

    def _owned_partials(self) -> list[tuple[str, int]]:
        return [(self.partials_topic, p) for p in self.mergers]

    def _process(self, consumer: Consumer, messages: list[Message]) -> None:
        by_partition: dict[tuple[str, int], list[Message]] = {}
        for msg in messages:
            if msg.error():
                log.warning("consumer error: %s", msg.error())
                continue
            by_partition.setdefault((msg.topic(), msg.partition()), []).append(msg)
        for (topic, partition), batch in by_partition.items():
            self.metrics.events_in.labels(topic=topic).inc(len(batch))
            if topic == self.partials_topic:
                self._stage2(consumer, partition, batch)
            elif (topic, partition) in self.profilers:
                self._stage1(consumer, topic, partition, batch)

    # -- stage 1 ------------------------------------------------------------------------------

    def _stage1(self, consumer: Consumer, topic: str, partition: int, batch: list[Message]) -> None:
        offsets = [m.offset() for m in batch]
        started = time.perf_counter()
        records, errors = self.codecs[topic].decode_many(
            [m.value() for m in batch], topic=topic, partition=partition, offsets=offsets
        )
        self.metrics.decode_seconds.inc(time.perf_counter() - started)
        for err in errors:
            self._dead_letter(batch[err.index], err.reason, "decode_error")
        self.metrics.decoded.labels(topic=topic).inc(len(records))
        good = _without(range(len(batch)), [e.index for e in errors])
        records, good = self._drop_future(records, good, batch)
        profiler = self.profilers[(topic, partition)]
        result = profiler.observe(records, next_offset=offsets[-1] + 1)
        for i in result.unknown:
            msg = batch[good[i]]
            self._dead_letter(msg, f"unknown model id {records[i]['model_id']!r}", "unknown_model")
        self.metrics.late.labels(topic=topic).inc(result.late)
        self.metrics.profiled.labels(topic=topic).inc(result.profiled)
        for report in result.reports:
            self.producer.produce(
                self.partials_topic, value=report.to_bytes(), key=report.model_id.encode()
            )
        if result.reports:
            self._checkpoint(consumer, topic, partition, profiler.state())

    def _drop_future(
        self, records: list[dict], good: list[int], batch: list[Message]
    ) -> tuple[list[dict], list[int]]:
        """Dead-letter events stamped further ahead of this worker's clock than allowed."""
        max_future = self.cfg.worker.max_future_ms
        kept, future = split_future(records, int(time.time() * 1000) + max_future)
        if not future:
            return records, good
        for i in future:
            reason = (
                f"event_time {records[i]['event_time']} is more than {max_future} ms ahead "
                "of the worker's clock (worker.max_future)"
            )
            self._dead_letter(batch[good[i]], reason, "future_event_time")
        return [records[i] for i in kept], [good[i] for i in kept]

    def _dead_letter(self, msg: Message, reason: str, error: str) -> None:
        self.metrics.dead_lettered.labels(reason=error).inc()
        letter = DeadLetter(
            msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), reason, error
        )
        self.dlq.send(letter)

    # -- stage 2 ------------------------------------------------------------------------------

    def _stage2(self, consumer: Consumer, partition: int, batch: list[Message]) -> None:
        mergers = self.mergers.setdefault(partition, {})
        closed = False
        for msg in batch:
            report = PartialReport.from_bytes(msg.value())
            merger = mergers.get(report.model_id) or self._new_merger(report.model_id)
            mergers[report.model_id] = merger
            result = merger.observe(report)
            self._publish(report.model_id, result.alerts, len(result.closed))
            self._observe_delay(merger, result.closed)
            closed |= bool(result.closed)
        self.offsets[(self.partials_topic, partition)] = batch[-1].offset() + 1
        if closed:
            self._checkpoint_stage2(consumer, partition)

    def _new_merger(self, model_id: str) -> ModelMerger:
        return ModelMerger(model_id, self._new_monitor(model_id), *self._merger_args(model_id))

    def _merger_args(self, model_id: str) -> tuple[Any, ...]:
        """(timing, partitions, idle timeout, outcome partitions, regression, versioned)."""
        engine = self.engines[model_id]
        concept = engine.config.concept
        outcome_partitions = self.outcome_partitions if concept and self.outcomes_topic else 0
        regression = bool(concept and concept.task == "regression")
        return (
            engine.timing,
            self.features_partitions,
            self.cfg.worker.idle_timeout_ms,
            outcome_partitions,
            regression,
            engine.config.versions is not None,
        )

    def _tick(self, consumer: Consumer) -> None:
        now = int(time.time() * 1000)
        for partition, mergers in self.mergers.items():
            closed = False
            for model_id, merger in mergers.items():
                result = merger.tick(now)
                if result.closed:
                    log.info(
                        "model %s: idle timeout closed %d panes with %s partitions reported",
                        model_id,
                        len(result.closed),
                        result.partitions_reported,
                    )
                self._publish(model_id, result.alerts, len(result.closed))
                closed |= bool(result.closed)
            if closed:
                self._checkpoint_stage2(consumer, partition)

    def _observe_delay(self, merger: ModelMerger, closed: list[int]) -> None:
        now_ms = time.time() * 1000
        for end in closed:
            delay = now_ms - end - merger.timing.lateness_ms
            self.metrics.close_delay.observe(max(delay, 0.0) / 1000)

    def _publish(self, model_id: str, alerts: list[Alert], closed: int) -> None:
        if closed:
            self.metrics.windows_closed.labels(model=model_id).inc(closed)
        for alert in alerts:
            value = self.alerts_codec.encode(alert_to_record(alert))
            self.producer.produce(self.topics.alerts.name, value=value, key=model_id.encode())
            kind, status = alert.kind.value, alert.status.value
            self.metrics.alerts.labels(model=model_id, kind=kind, status=status).inc()
            log.info(
                "alert %s %s %s %s feature=%s window=%d",
                alert.alert_id,
                model_id,
                kind,
                status,
                alert.feature,
                alert.window_start,
            )

    def _checkpoint_stage2(self, consumer: Consumer, partition: int) -> None:
        offset = self.offsets.get((self.partials_topic, partition))
        if offset is None:
            return
        models = {m: merger.state() for m, merger in self.mergers[partition].items()}
        self._checkpoint(
            consumer, self.partials_topic, partition, {"offset": offset, "models": models}
        )

    # -- reference changes ----------------------------------------------------------------------

    def _new_references(self, published: list[PublishedReference]) -> None:
        for pub in published:
            timeline = self.timelines.get(pub.model_id)
            if timeline is None or pub.offset < timeline.offset_:
                continue
            try:
                switch = timeline.add(pub.reference, pub.effective_from)
            except ValueError as exc:
                log.error("references topic @%d: %s: ignored", pub.offset, exc)
                continue
            timeline.offset_ = pub.offset + 1
            if switch is not None:
                self._switch_reference(pub, switch, timeline)

    def _switch_reference(
        self, pub: PublishedReference, switch: int, timeline: ReferenceTimeline
    ) -> None:
        """Save the timeline (every worker and restart then agrees), then tell the monitors."""
        self.checkpoints.save(REFERENCES_KEY + pub.model_id, timeline.to_state())
        self._flush()
        _catch_up(self.profile_monitors[pub.model_id], timeline)  # stage 1
        for mergers in self.mergers.values():
            if pub.model_id in mergers:
                _catch_up(mergers[pub.model_id].monitor, timeline)
        self.metrics.reference_changes.labels(model=pub.model_id).inc()
        log.info(
            "model %s: reference %s applies from %d (effective from %d)",
            pub.model_id,
            pub.reference.reference_id,
            switch,
            pub.effective_from,
        )
        ahead = [p.watermark_ for p in self.profilers.values() if p.watermark_ >= switch]
        if ahead:
            log.warning(
                "model %s: reference %s arrived after events at or past its switch time %d "
                "were profiled; publish with more lead (--effective-from): those panes are "
                "dropped by the model's monitor, counted as reference mismatches",
                pub.model_id,
                pub.reference.reference_id,
                switch,
            )

    # -- checkpoints and rebalancing ------------------------------------------------------------

    def _checkpoint(
        self, consumer: Consumer, topic: str, partition: int, state: Mapping[str, Any]
    ) -> None:
        """Outputs first, then the state that covers them, then the group offset (for lag)."""
        self._flush()
        self.checkpoints.save(f"{topic}:{partition}", state)
        self._flush()
        offset = int(state["offset"])
        self.offsets[(topic, partition)] = offset
        try:  # the group offset only feeds lag tools; the checkpoint above is what counts
            consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=True)
        except KafkaException as exc:
            log.debug("commit of %s[%d]@%d: %s", topic, partition, offset, exc)

    def _flush(self) -> None:
        """Wait for every produced message to be acknowledged (through a broker outage)."""
        while left := self.producer.flush(30):
            self._raise_failure()
            log.warning("%d messages unacknowledged after 30 s (broker down?): still waiting", left)
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self.failure:
            raise WorkerError(self.failure)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        self.metrics.delivery_failures.labels(topic=msg.topic(), error=err.name()).inc()
        if not self.failure:
            self.failure = f"could not write to {msg.topic()}: {err.str()} ({err.name()})"
            self.metrics.failure = self.failure
            log.error("%s -- stopping without a checkpoint, a restart re-sends it", self.failure)

    def _on_consumer_error(self, generation: int, err: KafkaError) -> None:
        if generation == self.generation_:  # a replaced consumer's errors are history
            self._on_kafka_error(err)

    def _on_kafka_error(self, err: KafkaError) -> None:
        self.metrics.kafka_errors.labels(code=err.name()).inc()
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.metrics.set_broker_up(False)
            log.warning("all brokers down: %s", err.str())
        elif err.fatal() or err.code() == KafkaError._AUTHENTICATION:
            self.failure = self.failure or f"Kafka client error: {err.str()}"
            self.metrics.failure = self.failure
        elif err.code() == KafkaError._TRANSPORT:  # once per reconnect attempt: no flood
            log.debug("kafka: %s", err.str())
        else:
            log.warning("kafka: %s", err.str())

    def _checkpoint_all(self, consumer: Consumer, only: Iterable[TopicPartition] = ()) -> None:
        wanted = {(tp.topic, tp.partition) for tp in only} or None
        for (topic, partition), profiler in self.profilers.items():
            if wanted is None or (topic, partition) in wanted:
                self._checkpoint(consumer, topic, partition, profiler.state())
        for partition in self.mergers:
            if wanted is None or (self.partials_topic, partition) in wanted:
                self._checkpoint_stage2(consumer, partition)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.consumer_:  # a replaced consumer: its group view is stale
            return
        keys = [f"{tp.topic}:{tp.partition}" for tp in partitions]
        saved = self.checkpoints.load(keys)
        for tp, key in zip(partitions, keys, strict=True):
            state = saved.get(key)
            if tp.topic == self.partials_topic:
                self._assign_partials(tp, state)
            else:
                self._assign_input(tp, state)
            tp.offset = int(state["offset"]) if state else OFFSET_BEGINNING
        self.metrics.assigned = sorted(keys)
        log.info("assigned %s (%d from checkpoints)", keys, len(saved))
        consumer.assign(partitions)

    def _assign_input(self, tp: TopicPartition, state: Mapping[str, Any] | None) -> None:
        timings = {m: e.timing for m, e in self.engines.items()}
        batchers = {m: e.batch for m, e in self.engines.items()}
        source = OUTCOMES if tp.topic == self.outcomes_topic else FEATURES
        profiler = PartitionProfiler(
            tp.partition,
            self.profile_monitors,
            timings,
            lambda m, recs: batchers[m](recs),
            keep_rows=self.row_models,
            source=source,
            shadows=self.shadows,
        )
        if state:
            profiler.load(state)
        self.profilers[(tp.topic, tp.partition)] = profiler

    def _assign_partials(self, tp: TopicPartition, state: Mapping[str, Any] | None) -> None:
        mergers = {}
        for model_id, merger_state in (state or {}).get("models", {}).items():
            mergers[model_id] = ModelMerger.from_state(
                merger_state,
                self.engines[model_id].restore,
                model_id,
                *self._merger_args(model_id),
            )
            if model_id in self.timelines:
                _catch_up(mergers[model_id].monitor, self.timelines[model_id])
        self.mergers[tp.partition] = mergers
        if state:
            self.offsets[(tp.topic, tp.partition)] = int(state["offset"])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.consumer_:
            return
        self._checkpoint_all(consumer, partitions)
        self._drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.consumer_:
            return
        self._drop(partitions)  # someone else owns them now: our state is stale

    def _drop(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            if tp.topic == self.partials_topic:
                self.mergers.pop(tp.partition, None)
            else:
                self.profilers.pop((tp.topic, tp.partition), None)
            self.offsets.pop((tp.topic, tp.partition), None)

    def _on_stats(self, generation: int, raw: str) -> None:
        if generation != self.generation_:  # from a replaced consumer
            return
        stats = json.loads(raw)
        if "cgrp" in stats:
            self.group_watch.observe(stats["cgrp"], time.monotonic())
        brokers = [b for b in stats.get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        if any(b.get("state") == "UP" for b in brokers) and not self.metrics.broker_ok:
            log.info("broker reachable again")
            self.metrics.set_broker_up(True)
        for topic, info in stats.get("topics", {}).items():
            for partition, part in info.get("partitions", {}).items():
                lag = part.get("consumer_lag", -1)
                if partition != "-1" and lag >= 0:
                    self.metrics.consumer_lag.labels(topic=topic, partition=partition).set(lag)


def _catch_up(monitor: Any, timeline: ReferenceTimeline) -> None:
    """Schedule on a monitor the timeline's switches after the last one it knows."""
    for start, reference in timeline.later_than(monitor.last_switch_ms):
        monitor.rebase(reference, start)


def _close_quietly(consumer: Consumer) -> None:
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:
        log.debug("closing the replaced consumer: %s", exc)


def _end_offset(consumer: Consumer, tp: TopicPartition, timeout: float = 30) -> int:
    """Log end offset; a topic created a moment ago may not have a leader yet: retry."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=timeout)[1]
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _without(indices: Iterable[int], dropped: Iterable[int]) -> list[int]:
    gone = set(dropped)
    return [i for i in indices if i not in gone]


def _registry(url: str | None) -> Any:
    if not url:
        return None
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient({"url": url})


def _codec(schema: str, topic: TopicConfig, registry: Any) -> Codec:
    if topic.format == "confluent":
        if registry is None:
            raise ValueError(
                f"topic {topic.name}: format confluent needs worker.schema_registry_url"
            )
        return Codec(schema, "confluent", registry=registry, subject=f"{topic.name}-value")
    return Codec(schema, topic.format)


def serve_metrics(worker: Worker) -> MetricsServer | None:
    port = worker.cfg.worker.metrics_port
    if port is None:
        return None
    return MetricsServer(worker.metrics, worker.cfg.worker.metrics_host, port).start()
