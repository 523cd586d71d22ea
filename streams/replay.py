"""Read history back as columnar batches in event-time order: from files or from a topic range.

Both sources yield :class:`Step` objects: the feature and outcome batches whose event time
lies in ``(previous watermark, watermark]``, per model, sorted by event time. The backtest
feeds them to the engine and then advances it to ``watermark``.

**Files** (:class:`FileSource`): Parquet, CSV, JSONL or Avro container files. Flat
tables go column by column into :class:`FeatureBatch` (pyarrow, no per-event dicts);
JSONL/Avro files of nested ``FeatureEvent``/``OutcomeEvent`` records go through
``from_records``. Flat column names: ``model_id``, ``model_version``, ``prediction_id``,
``event_time`` (int ms or a timestamp), ``score``/``prediction_score``,
``label``/``prediction_label``, ``segment``, ``latency_ms``; every other numeric or boolean
column is a numeric feature and every string column a categorical one. Outcome tables have
``model_id``, ``prediction_id``, ``event_time`` and ``label`` (or ``value``).

**Topics** (:class:`TopicRange` + :func:`topic_steps`): start offsets from
``offsets_for_times(start)``, end offsets fixed when the replay starts (the high watermark,
or ``offsets_for_times(end)`` when earlier), so a live topic does not make the replay
endless. The range is cut on the Kafka message timestamps, so producers should stamp
messages with the event time (as ``CreateTime``); windows are still cut on the event
time inside each event. Messages are read with confluent-kafka in batches, decoded, and
all partitions (of the features and the outcomes topic) are merged in event-time order:
each partition is released in offset order, up to the smallest event time that every
unfinished partition has reached.

>>> import numpy as np, pyarrow as pa
>>> table = pa.table({"model_id": ["m", "m", "m"], "prediction_id": ["a", "b", "c"],
...                   "event_time": [30, 10, 20], "x": [3.0, 1.0, 2.0],
...                   "country": ["FR", None, "DE"]})
>>> source = FileSource(features=features_from_table(table))
>>> [(s.watermark, s.features[0].numeric["x"].tolist()) for s in source.steps(chunk_rows=2)]
[(20, [1.0, 2.0]), (30, [3.0])]
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaException, TopicPartition
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.reference import FILE_FORMAT_BY_SUFFIX

log = logging.getLogger(__name__)

FEATURE_COLUMNS = frozenset(
    {
        "model_id",
        "model_version",
        "prediction_id",
        "event_time",
        "score",
        "prediction_score",
        "label",
        "prediction_label",
        "segment",
        "latency_ms",
    }
)
FORMATS = ("parquet", "csv", "jsonl", "avro")
_SUFFIXES = FILE_FORMAT_BY_SUFFIX


NO_TIME = -(2**62)


@dataclass(slots=True)
class Step:
    """Events released up to `watermark` (event time, ms).

    Files give columnar per-model `features` and `outcomes` (time-sorted); topics give
    `records` / `outcome_records`: decoded records per partition in offset order, as
    ``(partition, records, next_offset)``, which the backtest hands to the worker's own
    stage-1 profiler.
    """

    watermark: int
    features: list[FeatureBatch] = field(default_factory=list)
    outcomes: list[OutcomeBatch] = field(default_factory=list)
    records: list[tuple[int, list[dict], int]] = field(default_factory=list)
    outcome_records: list[tuple[int, list[dict], int]] = field(default_factory=list)

    @property
    def events(self) -> int:
        return (
            sum(len(b) for b in self.features)
            + sum(len(b) for b in self.outcomes)
            + sum(len(r) for _, r, _ in self.records)
            + sum(len(r) for _, r, _ in self.outcome_records)
        )


# --------------------------------------------------------------------------- batch helpers


def concat_features(batches: Sequence[FeatureBatch]) -> FeatureBatch:
    """One batch from several of the same model; a column absent in a part is missing there."""
    if len(batches) == 1:
        return batches[0]
    if not batches:
        raise ValueError("concat_features needs at least one batch")
    numeric = sorted({k for b in batches for k in b.numeric})
    categorical = sorted({k for b in batches for k in b.categorical})

    def num(b: FeatureBatch, col: np.ndarray | None) -> np.ndarray:
        return np.full(len(b), np.nan) if col is None else col

    def obj(b: FeatureBatch, col: np.ndarray | None) -> np.ndarray:
        return np.full(len(b), None, dtype=object) if col is None else col

    def optional(name: str, fill: Callable[[FeatureBatch, Any], np.ndarray]) -> Any:
        if all(getattr(b, name) is None for b in batches):
            return None
        return np.concatenate([fill(b, getattr(b, name)) for b in batches])

    return FeatureBatch(
        model_id=batches[0].model_id,
        prediction_id=np.concatenate([b.prediction_id for b in batches]),
        event_time=np.concatenate([b.event_time for b in batches]),
        numeric={f: np.concatenate([num(b, b.numeric.get(f)) for b in batches]) for f in numeric},
        categorical={
            f: np.concatenate([obj(b, b.categorical.get(f)) for b in batches]) for f in categorical
        },
        score=optional("score", num),
        label=optional("label", obj),
        segment=optional("segment", obj),
        model_version=optional("model_version", obj),
        latency_ms=optional("latency_ms", num),
    )


def concat_outcomes(batches: Sequence[OutcomeBatch]) -> OutcomeBatch:
    if len(batches) == 1:
        return batches[0]
    labels = [b.label for b in batches]
    numeric = all(lab.dtype.kind == "f" for lab in labels)
    return OutcomeBatch(
        model_id=batches[0].model_id,
        prediction_id=np.concatenate([b.prediction_id for b in batches]),
        event_time=np.concatenate([b.event_time for b in batches]),
        label=np.concatenate(labels) if numeric else np.concatenate(labels).astype(object),
    )


def sort_by_time(batch: FeatureBatch | OutcomeBatch) -> Any:
    times = batch.event_time
    if len(times) < 2 or bool(np.all(times[1:] >= times[:-1])):
        return batch
    return batch.take(np.argsort(times, kind="stable"))


# --------------------------------------------------------------------------- files


def file_format(path: str | Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise ValueError(f"unknown file format {fmt!r}; expected one of {FORMATS}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"{path}: cannot tell the format from {suffix!r}; set format")
    return _SUFFIXES[suffix]


def read_records_or_table(path: str | Path, fmt: str = "auto") -> pa.Table | list[dict]:
    """A flat pyarrow table, or decoded records when the file holds nested events."""
    kind = file_format(path, fmt)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if kind == "csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    if kind == "avro":
        with open(path, "rb") as fh:
            records = list(fastavro.reader(fh))
        return records if _nested(records) else pa.Table.from_pylist(records)
    with open(path, "rb") as fh:
        first = fh.readline()
    if first.strip() and _nested([json.loads(first)]):
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    import pyarrow.json as pjson

    return pjson.read_json(path)


def _nested(records: Sequence[Mapping[str, Any]]) -> bool:
    return bool(records) and any(
        isinstance(records[0].get(k), dict) for k in ("numeric", "prediction")
    )


def read_features(
    paths: Iterable[str | Path],
    fmt: str = "auto",
    model_id: str | None = None,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
) -> dict[str, FeatureBatch]:
    """Feature events of every file, per model, sorted by event time."""
    parts: dict[str, list[FeatureBatch]] = {}
    for path in paths:
        data = read_records_or_table(path, fmt)
        if isinstance(data, list):
            found = _features_from_records(data, model_id, numeric, categorical)
        else:
            found = features_from_table(data, model_id, numeric, categorical)
        for model, batch in found.items():
            parts.setdefault(model, []).append(batch)
    return {m: sort_by_time(concat_features(b)) for m, b in parts.items()}


def read_outcomes(
    paths: Iterable[str | Path], fmt: str = "auto", model_id: str | None = None
) -> dict[str, OutcomeBatch]:
    """Outcome events of every file, per model, sorted by event time."""
    parts: dict[str, list[OutcomeBatch]] = {}
    for path in paths:
        data = read_records_or_table(path, fmt)
        table = pa.Table.from_pylist(data) if isinstance(data, list) else data
        for model, batch in outcomes_from_table(table, model_id).items():
            parts.setdefault(model, []).append(batch)
    return {m: sort_by_time(concat_outcomes(b)) for m, b in parts.items()}


def features_from_table(
    table: pa.Table,
    model_id: str | None = None,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
) -> dict[str, FeatureBatch]:
    """Per-model feature batches straight from the table's columns."""
    names = set(table.column_names)
    if numeric is None:
        numeric = [
            n for n in table.column_names if n not in FEATURE_COLUMNS and _is_number(table, n)
        ]
    if categorical is None:
        categorical = [
            n for n in table.column_names if n not in FEATURE_COLUMNS and _is_text(table, n)
        ]
    batches = {}
    for model, part in _split_models(table, model_id).items():
        n = part.num_rows
        batches[model] = FeatureBatch(
            model_id=model,
            prediction_id=_objects(part, "prediction_id", n),
            event_time=_times(part),
            numeric={f: _floats(part, f, n) for f in numeric},
            categorical={f: _objects(part, f, n) for f in categorical},
            score=_first(part, ("score", "prediction_score"), _floats, n),
            label=_first(part, ("label", "prediction_label"), _objects, n),
            segment=_objects(part, "segment", n) if "segment" in names else None,
            model_version=_objects(part, "model_version", n) if "model_version" in names else None,
            latency_ms=_floats(part, "latency_ms", n) if "latency_ms" in names else None,
        )
    return batches


def table_from_features(batch: FeatureBatch) -> pa.Table:
    """The flat table :func:`features_from_table` reads back (e.g. to write a Parquet file)."""
    columns: dict[str, Any] = {
        "model_id": pa.array(np.full(len(batch), batch.model_id, dtype=object), pa.string()),
        "prediction_id": pa.array(batch.prediction_id, pa.string()),
        "event_time": pa.array(batch.event_time, pa.int64()),
    }
    columns.update({name: pa.array(col, pa.float64()) for name, col in batch.numeric.items()})
    columns.update({name: pa.array(col, pa.string()) for name, col in batch.categorical.items()})
    for name, kind in (("score", pa.float64()), ("label", pa.string()),
                       ("segment", pa.string()), ("model_version", pa.string()),
                       ("latency_ms", pa.float64())):  # fmt: skip
        col = getattr(batch, name)
        if col is not None:
            columns[name] = pa.array(col, kind, from_pandas=True)
    return pa.table(columns)


def outcomes_from_table(table: pa.Table, model_id: str | None = None) -> dict[str, OutcomeBatch]:
    column = "label" if "label" in table.column_names else "value"
    if column not in table.column_names:
        raise ValueError("an outcome table needs a 'label' or a 'value' column")
    batches = {}
    for model, part in _split_models(table, model_id).items():
        n = part.num_rows
        has_text = _is_text(part, column)
        label = _objects(part, column, n) if has_text else _floats(part, column, n)
        if column == "label" and "value" in part.column_names and has_text:
            label = _objects(part, "label", n)
        batches[model] = OutcomeBatch(
            model_id=model,
            prediction_id=_objects(part, "prediction_id", n),
            event_time=_times(part),
            label=label,
        )
    return batches


def _features_from_records(
    records: list[dict],
    model_id: str | None,
    numeric: Sequence[str] | None,
    categorical: Sequence[str] | None,
) -> dict[str, FeatureBatch]:
    grouped: dict[str, list[dict]] = {}
    for record in records:
        grouped.setdefault(model_id or str(record["model_id"]), []).append(record)
    return {
        model: _with_model(FeatureBatch.from_records(rows, numeric, categorical), model)
        for model, rows in grouped.items()
    }


def _with_model(batch: FeatureBatch, model: str) -> FeatureBatch:
    batch.model_id = model
    return batch


def _split_models(table: pa.Table, model_id: str | None) -> dict[str, pa.Table]:
    if model_id is not None or "model_id" not in table.column_names:
        if model_id is None:
            raise ValueError("the table has no model_id column; give model_id")
        return {model_id: table}
    models = table.column("model_id")
    unique = pc.unique(models).to_pylist()
    if len(unique) == 1:
        return {str(unique[0]): table}
    return {str(m): table.filter(pc.equal(models, m)) for m in unique}


def _is_number(table: pa.Table, name: str) -> bool:
    kind = table.schema.field(name).type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _is_text(table: pa.Table, name: str) -> bool:
    kind = table.schema.field(name).type
    return (
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)
    )


def _floats(table: pa.Table, name: str, n: int) -> np.ndarray:
    col = pc.cast(table.column(name), pa.float64())
    return col.to_numpy() if col.null_count == 0 else col.fill_null(np.nan).to_numpy()


def _objects(table: pa.Table, name: str, n: int) -> np.ndarray:
    col = table.column(name)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.string())
    return col.to_numpy(zero_copy_only=False).astype(object, copy=False)


def _first(table: pa.Table, names: Sequence[str], read: Callable, n: int) -> np.ndarray | None:
    for name in names:
        if name in table.column_names:
            return read(table, name, n)
    return None


def _times(table: pa.Table) -> np.ndarray:
    col = table.column("event_time")
    if pa.types.is_timestamp(col.type):
        col = pc.cast(pc.cast(col, pa.timestamp("ms", tz=col.type.tz)), pa.int64())
    return pc.cast(col, pa.int64()).to_numpy()


@dataclass(slots=True)
class FileSource:
    """History held in memory (so a sweep can replay it again): per-model sorted batches."""

    features: dict[str, FeatureBatch]
    outcomes: dict[str, OutcomeBatch] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = {m: sort_by_time(b) for m, b in self.features.items()}
        self.outcomes = {m: sort_by_time(b) for m, b in self.outcomes.items()}

    @classmethod
    def from_paths(
        cls,
        features: Sequence[str | Path],
        outcomes: Sequence[str | Path] = (),
        fmt: str = "auto",
        model_id: str | None = None,
    ) -> FileSource:
        return cls(read_features(features, fmt, model_id), read_outcomes(outcomes, fmt, model_id))

    @property
    def events(self) -> int:
        return sum(map(len, self.features.values())) + sum(map(len, self.outcomes.values()))

    def end_time(self) -> int | None:
        ends = [
            int(b.event_time[-1])
            for b in (*self.features.values(), *self.outcomes.values())
            if len(b)
        ]
        return max(ends) if ends else None

    def steps(self, chunk_rows: int = 65_536) -> Iterator[Step]:
        """Slices of about `chunk_rows` events (all models, both kinds) in event-time order."""
        batches = [*self.features.values(), *self.outcomes.values()]
        if not any(len(b) for b in batches):
            return
        times = np.sort(np.concatenate([b.event_time for b in batches]), kind="stable")
        index = np.append(np.arange(chunk_rows - 1, len(times), chunk_rows), len(times) - 1)
        cuts = np.unique(times[index])
        starts = {id(b): 0 for b in batches}
        for watermark in cuts.tolist():
            step = Step(watermark=int(watermark))
            for batch, target in [(b, step.features) for b in self.features.values()] + [
                (b, step.outcomes) for b in self.outcomes.values()
            ]:
                lo = starts[id(batch)]
                hi = int(np.searchsorted(batch.event_time, watermark, side="right"))
                if hi > lo:
                    target.append(batch.take(slice(lo, hi)))  # type: ignore[arg-type]
                starts[id(batch)] = hi
            yield step


# --------------------------------------------------------------------------- topics

Decoder = Callable[[list[bytes | None], str, int, list[int]], list[dict]]


@dataclass(frozen=True, slots=True)
class PartitionRange:
    topic: str
    partition: int
    start: int  # first offset to read
    end: int  # first offset NOT to read (fixed when the replay starts)

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def plan_range(
    consumer: Consumer,
    topic: str,
    start_ms: int | None,
    end_ms: int | None,
    timeout: float = 30.0,
) -> list[PartitionRange]:
    """Offsets to read per partition of `topic`, from `start_ms` to `end_ms` (None = open)."""
    meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
    if meta.error is not None:
        raise KafkaException(meta.error)
    partitions = sorted(meta.partitions)
    highs = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
        for p in partitions
    }

    def at_time(ms: int | None, default: Callable[[int], int]) -> dict[int, int]:
        if ms is None:
            return {p: default(p) for p in partitions}
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, ms) for p in partitions], timeout=timeout
        )
        # -1: no message at or after that time, i.e. the partition's end.
        return {
            tp.partition: tp.offset if tp.offset >= 0 else highs[tp.partition][1] for tp in found
        }

    starts = at_time(start_ms, lambda p: highs[p][0])
    ends = at_time(end_ms, lambda p: highs[p][1])
    return [
        PartitionRange(topic, p, starts[p], max(starts[p], min(ends[p], highs[p][1])))
        for p in partitions
    ]


@dataclass(slots=True)
class Chunk:
    """Decoded records of one partition, in offset order, with their event times."""

    times: np.ndarray  # int64 ms, one per record
    records: list[dict]
    offsets: np.ndarray  # int64, one per record
    next_offset: int  # offset after the last message this chunk covers

    def split(self, k: int) -> tuple[Chunk, Chunk]:
        head_next = int(self.offsets[k]) if k < len(self.records) else self.next_offset
        head = Chunk(self.times[:k], self.records[:k], self.offsets[:k], head_next)
        tail = Chunk(self.times[k:], self.records[k:], self.offsets[k:], self.next_offset)
        return head, tail


@dataclass(slots=True)
class _Pending:
    """Records of one partition not yet released, and how far its event time got."""

    kind: str  # "features" | "outcomes"
    high: int = NO_TIME  # highest event time read so far
    released: int = NO_TIME  # highest event time released so far
    done: bool = False
    chunks: list[Chunk] = field(default_factory=list)


class EventTimeMerger:
    """K-way merge of partitions by event time.

    Each partition is released as a prefix in offset order, never reordered (the worker's
    lateness rule depends on that order): the longest prefix whose running maximum event
    time is at or before the *frontier*, the smallest highest-time-read over the partitions
    not yet finished. Across partitions the released steps therefore advance in event time.
    """

    def __init__(self, sources: Iterable[tuple[tuple[str, int], str]]) -> None:
        self.pending = {key: _Pending(kind) for key, kind in sources}
        self.released_ = NO_TIME

    def add(self, key: tuple[str, int], chunk: Chunk) -> None:
        state = self.pending[key]
        state.chunks.append(chunk)
        if len(chunk.times):
            state.high = max(state.high, int(chunk.times.max()))

    def finish(self, key: tuple[str, int]) -> None:
        self.pending[key].done = True

    @property
    def frontier(self) -> int:
        open_highs = [s.high for s in self.pending.values() if not s.done]
        if open_highs:
            return min(open_highs)
        return max((s.high for s in self.pending.values()), default=self.released_)

    def release(self) -> tuple[int, list[tuple[tuple[str, int], str, Chunk]]]:
        """(watermark, released chunks per partition) for everything due at the frontier."""
        frontier = self.frontier
        out = []
        for key, state in self.pending.items():
            keep: list[Chunk] = []
            for i, chunk in enumerate(state.chunks):
                running = np.maximum.accumulate(np.append(state.released, chunk.times))[1:]
                k = int(np.searchsorted(running, frontier, side="right"))
                head, tail = chunk.split(k)
                if len(head.records) or k == len(chunk.records):
                    out.append((key, state.kind, head))
                if len(head.records):
                    state.released = max(state.released, int(running[k - 1]))
                if k < len(chunk.records):
                    keep = [tail, *state.chunks[i + 1 :]]
                    break
            state.chunks = keep
        self.released_ = max(self.released_, frontier)
        return self.released_, out


@dataclass
class TopicRange:
    """A bounded replay of the features (and optionally outcomes) topic between two times."""

    config: Mapping[str, Any]  # confluent-kafka client config (KafkaSettings.confluent_config())
    features_topic: str
    outcomes_topic: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    batch_size: int = 10_000
    poll_timeout: float = 1.0
    ranges_: list[PartitionRange] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(r.size for r in self.ranges_)

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self.config,
                "group.id": f"driftwire-backtest-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )

    def plan(self) -> list[PartitionRange]:
        """Fix the offsets to read now (so a live topic does not make the replay endless)."""
        consumer = self._consumer()
        try:
            self._plan(consumer)
        finally:
            consumer.close()
        return self.ranges_

    def _plan(self, consumer: Consumer) -> None:
        topics = [self.features_topic] + ([self.outcomes_topic] if self.outcomes_topic else [])
        self.ranges_ = [
            r for t in topics for r in plan_range(consumer, t, self.start_ms, self.end_ms)
        ]
        log.info("replay of %s: %d partitions, %d messages", ", ".join(topics),
                 len(self.ranges_), self.events)  # fmt: skip

    def open(self) -> Consumer:
        """The reading consumer; plans the offsets first unless `plan()` already did."""
        consumer = self._consumer()
        if not self.ranges_:
            self._plan(consumer)
        return consumer

    def feature_partitions(self) -> list[int]:
        """Features partitions with something to replay (they are the ones that report)."""
        return [r.partition for r in self.ranges_ if r.topic == self.features_topic and r.size]

    def outcome_partitions(self) -> list[int]:
        return [r.partition for r in self.ranges_ if r.topic == self.outcomes_topic and r.size]


def topic_steps(
    replay: TopicRange,
    decode_features: Callable[[list[bytes | None], PartitionRange, list[int]], list[dict]],
    decode_outcomes: Callable[[list[bytes | None], PartitionRange, list[int]], list[dict]]
    | None = None,
    on_messages: Callable[[int], None] | None = None,
) -> Iterator[Step]:
    """Read the fixed offset ranges and yield steps merged in event time.

    The decoders turn one partition's message values (with their offsets) into
    ``FeatureEvent`` / ``OutcomeEvent`` records; bad messages are theirs to count and skip.
    Records stay per partition in offset order (`Step.records`, `Step.outcome_records`).
    """
    consumer = replay.open()
    try:
        by_key = {(r.topic, r.partition): r for r in replay.ranges_}
        kinds = {k: "outcomes" if k[0] == replay.outcomes_topic else "features" for k in by_key}
        merger = EventTimeMerger(kinds.items())
        active = [r for r in replay.ranges_ if r.size > 0]
        for r in replay.ranges_:
            if r.size == 0:
                merger.finish((r.topic, r.partition))
        if active:
            consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in active])
        remaining = {(r.topic, r.partition) for r in active}
        while remaining:
            messages = consumer.consume(replay.batch_size, timeout=replay.poll_timeout)
            read = _read_messages(messages, by_key, remaining)
            for key, (values, offsets) in read.items():
                decode = decode_features if kinds[key] == "features" else decode_outcomes
                assert decode is not None
                records = decode(values, by_key[key], offsets)
                merger.add(key, _chunk(records, values, offsets))
                if offsets[-1] + 1 >= by_key[key].end:
                    _finish(consumer, merger, remaining, key)
                if on_messages is not None:
                    on_messages(len(values))
            if not messages:
                # Transaction markers or compaction can leave no message at end - 1.
                for tp in consumer.position([TopicPartition(*key) for key in sorted(remaining)]):
                    if tp.offset >= by_key[(tp.topic, tp.partition)].end:
                        _finish(consumer, merger, remaining, (tp.topic, tp.partition))
            step = _step(*merger.release())
            if step.events:
                yield step
    finally:
        consumer.close()


def _read_messages(
    messages: list[Any], by_key: Mapping[tuple[str, int], PartitionRange], remaining: set
) -> dict[tuple[str, int], tuple[list[bytes | None], list[int]]]:
    grouped: dict[tuple[str, int], tuple[list[bytes | None], list[int]]] = {}
    for msg in messages:
        if msg.error() is not None:
            raise KafkaException(msg.error())
        key = (msg.topic(), msg.partition())
        if key not in remaining or msg.offset() >= by_key[key].end:
            continue
        values, offsets = grouped.setdefault(key, ([], []))
        values.append(msg.value())
        offsets.append(msg.offset())
    return grouped


def _chunk(records: list[dict], values: list[Any], offsets: list[int]) -> Chunk:
    """Records with their offsets; a decoder that dropped bad messages sets `_offset`."""
    if len(records) == len(values):
        kept = np.asarray(offsets, dtype=np.int64)
    else:
        kept = np.fromiter((r["_offset"] for r in records), np.int64, len(records))
    times = np.fromiter((r["event_time"] for r in records), np.int64, len(records))
    return Chunk(times, records, kept, offsets[-1] + 1)


def _step(watermark: int, released: list[tuple[tuple[str, int], str, Chunk]]) -> Step:
    step = Step(watermark=watermark)
    for (_topic, partition), kind, chunk in released:
        target = step.records if kind == "features" else step.outcome_records
        target.append((partition, chunk.records, chunk.next_offset))
    return step


def _finish(
    consumer: Consumer,
    merger: EventTimeMerger,
    remaining: set[tuple[str, int]],
    key: tuple[str, int],
) -> None:
    """The partition reached its fixed end: stop fetching it (a live topic keeps growing)."""
    remaining.discard(key)
    merger.finish(key)
    consumer.pause([TopicPartition(key[0], key[1])])
