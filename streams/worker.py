"""The worker's stages as plain classes: no Kafka client in here, so each is unit-tested alone.

Stage 1, :class:`PartitionProfiler` (one per features partition): decoded events in,
per-pane :class:`~driftwire.detectors.profile.WindowProfile` partials out. A pane's
partial is emitted exactly once, when the partition's watermark (highest event time
seen) passes ``pane end + allowed lateness``; events arriving after that are counted
late and dropped. Lateness is decided per event against the running maximum of the
events before it, so the result does not depend on how the log was cut into batches:
replaying a partition from a checkpoint rebuilds the very same partials.

Stage 2, :class:`ModelMerger` (one per model, on the partials topic keyed by model id):
stores partials per (pane, source partition) -- a re-sent partial overwrites, never
adds -- and closes a pane once every features partition has reported a watermark past
it, or, for idle partitions, once ``idle_timeout`` of wall time has passed since the
other partitions did. Panes are closed in event-time order with
``monitor.advance(end + lateness)``, the same calls whatever the batch boundaries.

Recovery guarantee: both stages checkpoint (state + next offset) at window boundaries;
after a crash a stage restarts from its last checkpoint and replays the log, so it
re-emits identical partials and re-publishes identical alerts. Alert ids are
deterministic, hence *at-least-once publication with deterministic ids*: a subscriber
de-duplicating on ``alert_id`` sees each alert exactly once.

>>> report = PartialReport("fraud", partition=2, watermark=61_000, profiles=[])
>>> PartialReport.from_bytes(report.to_bytes()) == report
True
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from driftwire.detectors.alerts import Alert
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.profile import WindowProfile

_NO_WATERMARK = -(2**62)
_MAX_EMPTY_STEPS = 10_000  # panes closed one by one before a gap is jumped in one step
_LEN = struct.Struct(">I")
log = logging.getLogger(__name__)


class StageMonitor(Protocol):
    """What the stages need from the engine's `Monitor` (or a `VersionRegistry`, whose
    profiles come as (version, profile) pairs)."""

    def profile(self, batch: FeatureBatch) -> list[Any]: ...

    def add_profiles(self, profiles: list[Any]) -> list[Alert]: ...

    def advance(self, watermark_ms: int) -> list[Alert]: ...

    def snapshot(self) -> bytes: ...

    def update_outcomes(self, batch: OutcomeBatch) -> list[Alert]: ...


@dataclass(frozen=True)
class Timing:
    """A model's pane length (the window hop) and allowed lateness, in ms."""

    pane_ms: int
    lateness_ms: int

    def pane_start(self, times: np.ndarray) -> np.ndarray:
        return times - times % self.pane_ms


# -- the internal partials message ------------------------------------------------------------


FEATURES, OUTCOMES = "features", "outcomes"
CHAMPION = "champion"  # a champion's prediction rows, copied to each of its challengers


@dataclass
class PartialReport:
    """Stage 1 -> stage 2: a partition's watermark and the panes it has just finalised.

    `source` is the input topic role (features or outcomes, or champion for a champion's
    predictions routed to a challenger); `rows` carries, per pane start, the columns concept
    drift and shadow comparison need (predictions, or outcomes), Arrow-encoded. `versions`
    holds each profile's model version for models with `versions:` ('' otherwise).
    """

    model_id: str
    partition: int
    watermark: int
    profiles: list[WindowProfile] = field(default_factory=list)
    rows: list[tuple[int, bytes]] = field(default_factory=list)
    source: str = FEATURES
    versions: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        blobs = [p.to_bytes() for p in self.profiles] + [r for _, r in self.rows]
        head = {"m": self.model_id, "p": self.partition, "w": self.watermark, "s": self.source}
        head |= {"n": len(self.profiles), "r": [start for start, _ in self.rows]}
        if any(self.versions):  # absent for unversioned models: their bytes do not change
            head["v"] = self.versions
        encoded = json.dumps(head).encode()
        parts = [_LEN.pack(len(encoded)), encoded]
        for blob in blobs:
            parts += [_LEN.pack(len(blob)), blob]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> PartialReport:
        chunks = _split(data)
        head = json.loads(chunks[0])
        n, starts = head["n"], head["r"]
        if len(chunks) != n + len(starts) + 1:
            raise ValueError("truncated partial report")
        profiles = [WindowProfile.from_bytes(c) for c in chunks[1 : n + 1]]
        rows = list(zip(starts, chunks[n + 1 :], strict=True))
        versions = head.get("v") or [""] * n
        return cls(head["m"], head["p"], head["w"], profiles, rows, head["s"], versions)

    def versioned(self) -> list[tuple[str, WindowProfile]]:
        """(version, profile) pairs; '' for unversioned profiles."""
        versions = self.versions or [""] * len(self.profiles)
        return list(zip(versions, self.profiles, strict=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PartialReport) and self.to_bytes() == other.to_bytes()


def encode_columns(columns: Mapping[str, np.ndarray]) -> bytes:
    """Columns as one Arrow IPC record batch (strings, None and NaN survive the trip)."""
    batch = pa.RecordBatch.from_pydict({k: pa.array(v) for k, v in columns.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode_columns(data: bytes) -> dict[str, np.ndarray]:
    table = pa.ipc.open_stream(data).read_all()
    return {name: _numpy(table.column(name).combine_chunks()) for name in table.column_names}


def _numpy(col: pa.Array) -> np.ndarray:
    values = col.to_numpy(zero_copy_only=False)
    if pa.types.is_string(col.type) or pa.types.is_null(col.type):
        return values.astype(object, copy=False)
    return values


def concat_columns(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _split(data: bytes) -> list[bytes]:
    chunks, pos = [], 0
    while pos < len(data):
        (size,) = _LEN.unpack_from(data, pos)
        chunks.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return chunks


# -- decoded records -> columns ------------------------------------------------------------------


def feature_batch(
    records: Sequence[Mapping[str, Any]],
    numeric: Sequence[str],
    categorical: Sequence[str],
    segment_key: str | None = None,
) -> FeatureBatch:
    """Same columns as `FeatureBatch.from_records`, built by pyarrow's C++ converter.

    Pulling 25 features out of per-event dicts in Python costs about as much as decoding
    them (bench/e2e.py); pyarrow turns the list of maps into columns in one call.
    """
    n = len(records)
    if n == 0:
        raise ValueError("feature_batch needs at least one record")
    # explicit types: 3x faster than letting pyarrow infer, and unlisted features are skipped
    nums = pa.array([r.get("numeric") or {} for r in records], _struct(numeric, pa.float64()))
    cats = pa.array(
        [r.get("categorical") or {} for r in records], _struct(categorical, pa.string())
    )
    preds = pa.array([r.get("prediction") or {} for r in records], _PREDICTION)
    return FeatureBatch(
        model_id=str(records[0]["model_id"]),
        prediction_id=np.array([r["prediction_id"] for r in records], dtype=object),
        event_time=np.fromiter((r["event_time"] for r in records), np.int64, n),
        numeric={f: _floats(nums, f) for f in numeric},
        categorical={f: _objects(cats, f) for f in categorical},
        score=_floats(preds, "score"),
        label=_objects(preds, "label"),
        segment=(
            np.array([(r.get("segments") or {}).get(segment_key) for r in records], dtype=object)
            if segment_key
            else None
        ),
        model_version=np.array([r.get("model_version") for r in records], dtype=object),
        latency_ms=np.array([r.get("latency_ms") for r in records], dtype=np.float64),
    )


_PREDICTION = pa.struct([("score", pa.float64()), ("label", pa.string())])


def _struct(names: Sequence[str], kind: pa.DataType) -> pa.DataType:
    # a struct needs at least one field; the placeholder is never read
    return pa.struct([(f, kind) for f in names] or [("__none__", kind)])


def _floats(struct: pa.Array, name: str) -> np.ndarray:
    return struct.field(name).to_numpy(zero_copy_only=False)


def _objects(struct: pa.Array, name: str) -> np.ndarray:
    return struct.field(name).to_numpy(zero_copy_only=False).astype(object, copy=False)


def prediction_columns(batch: FeatureBatch) -> dict[str, np.ndarray]:
    """What the label join needs from a prediction."""
    n = len(batch)
    return {
        "prediction_id": batch.prediction_id.astype(object),
        "event_time": batch.event_time,
        "score": batch.score if batch.score is not None else np.full(n, np.nan),
        "label": batch.label if batch.label is not None else np.full(n, None, dtype=object),
    }


def outcome_columns(records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Decoded `OutcomeEvent` records as columns."""
    return {
        "prediction_id": np.array([r["prediction_id"] for r in records], dtype=object),
        "event_time": np.fromiter((r["event_time"] for r in records), np.int64, len(records)),
        "label": np.array([r.get("label") for r in records], dtype=object),
        "value": np.array([r.get("value") for r in records], dtype=np.float64),
    }


# -- stage 1 -----------------------------------------------------------------------------------


def split_future(
    records: Sequence[Mapping[str, Any]], limit_ms: int
) -> tuple[list[int], list[int]]:
    """Indices of records with event_time <= `limit_ms`, and of those beyond it.

    One event stamped years ahead would move its partition's watermark there and make
    every later event late; the worker dead-letters such events instead of profiling them.
    """
    times = np.fromiter((r["event_time"] for r in records), np.int64, len(records))
    return np.flatnonzero(times <= limit_ms).tolist(), np.flatnonzero(times > limit_ms).tolist()


@dataclass
class ProfileResult:
    """What one batch did in stage 1."""

    reports: list[PartialReport]
    unknown: list[int]  # indices (into the batch) of events of unknown models
    late: int  # events dropped because their pane had already been emitted
    profiled: int


class PartitionProfiler:
    """Stage 1 for one input partition: decoded batches in, final pane partials out.

    On a features partition it profiles every model's events and, for the models in
    `keep_rows` (concept drift on), also forwards their prediction columns per pane. On
    an outcomes partition (`source=OUTCOMES`) it forwards outcome columns per pane.

    Args:
        partition: the input partition this instance owns.
        monitors: the engine monitor of each model (only the pure `profile` is used).
        timings: pane length and lateness per configured model.
        batch_of: turns decoded feature records of one model into a FeatureBatch.
        keep_rows: models whose rows (predictions or outcomes) stage 2 needs.
        source: FEATURES or OUTCOMES.
        shadows: champion id -> its challengers: a champion's prediction rows of a pane
            also go, as a CHAMPION report, to each challenger's stage 2 (just before the
            challenger's own report, so they are there when it closes the pane).
    """

    def __init__(
        self,
        partition: int,
        monitors: Mapping[str, StageMonitor],
        timings: Mapping[str, Timing],
        batch_of: Callable[[str, Sequence[Mapping[str, Any]]], FeatureBatch] | None = None,
        keep_rows: frozenset[str] = frozenset(),
        source: str = FEATURES,
        shadows: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.partition = partition
        self.monitors = monitors
        self.timings = timings
        self.batch_of = batch_of
        self.keep_rows = keep_rows
        self.source = source
        self.shadows = shadows or {}
        self.offset_ = 0  # next offset to read
        self.watermark_ = _NO_WATERMARK
        # (model, pane start, segment, version) -> the pane's partial
        self.open_: dict[tuple[str, int, str, str], WindowProfile] = {}
        self.rows_: dict[tuple[str, int], list[dict[str, np.ndarray]]] = {}  # (model, pane)
        self.reported_: dict[str, int] = {}  # per model: closed panes already reported

    def observe(self, records: Sequence[Mapping[str, Any]], next_offset: int) -> ProfileResult:
        """Profile decoded records (in partition order) read up to `next_offset`."""
        result = ProfileResult([], [], 0, 0)
        if records:
            times = np.fromiter((r["event_time"] for r in records), np.int64, len(records))
            models = np.array([r["model_id"] for r in records], dtype=object)
            known = np.isin(models, list(self.timings))
            # watermark *before* each event, from known models' events only (a stray
            # producer must not make everyone late): lateness must not depend on batch cuts
            clock = np.where(known, times, _NO_WATERMARK)
            before = np.maximum.accumulate(np.concatenate(([self.watermark_], clock)))[:-1]
            for model_id in np.unique(models).tolist():
                rows = np.flatnonzero(models == model_id)
                if model_id not in self.timings:
                    result.unknown.extend(rows.tolist())
                    continue
                result.late += self._profile(model_id, records, rows, times, before)
                result.profiled += len(rows)
            self.watermark_ = max(self.watermark_, int(clock.max()))
        self.offset_ = next_offset
        result.profiled -= result.late
        result.reports = self._emit_due()
        return result

    def _profile(
        self,
        model_id: str,
        records: Sequence[Mapping[str, Any]],
        rows: np.ndarray,
        times: np.ndarray,
        before: np.ndarray,
    ) -> int:
        timing = self.timings[model_id]
        pane_end = timing.pane_start(times[rows]) + timing.pane_ms
        on_time = pane_end + timing.lateness_ms > before[rows]
        kept = rows[on_time]
        if not len(kept):
            return len(rows)
        picked = [records[i] for i in kept.tolist()]
        columns = None
        if self.source == FEATURES:
            assert self.batch_of is not None
            batch = self.batch_of(model_id, picked)
            self._hold_profiles(batch)
            if model_id in self.keep_rows:
                columns = prediction_columns(batch)
        elif model_id in self.keep_rows:
            columns = outcome_columns(picked)
        if columns is not None:
            starts = timing.pane_start(columns["event_time"])
            for start in np.unique(starts).tolist():
                part = {k: v[starts == start] for k, v in columns.items()}
                self.rows_.setdefault((model_id, start), []).append(part)
        return len(rows) - len(kept)

    def _hold_profiles(self, batch: FeatureBatch) -> None:
        """Profile a model's batch into the open panes (per version for versioned models)."""
        for item in self.monitors[batch.model_id].profile(batch):
            version, prof = item if isinstance(item, tuple) else ("", item)
            prof.partitions = frozenset({self.partition})
            key = (batch.model_id, prof.window_start, prof.segment or "", version)
            held = self.open_.get(key)
            self.open_[key] = prof if held is None else held.merge(prof)

    def _emit_due(self) -> list[PartialReport]:
        """One report per model whose pane boundary the watermark crossed."""
        due: dict[str, list[tuple[str, WindowProfile]]] = {}
        for key, prof in list(self.open_.items()):
            if prof.window_end + self.timings[key[0]].lateness_ms <= self.watermark_:
                due.setdefault(key[0], []).append((key[3], self.open_.pop(key)))
        rows_due: dict[str, list[tuple[int, bytes]]] = {}
        for (model_id, start), parts in sorted(self.rows_.items()):
            timing = self.timings[model_id]
            if start + timing.pane_ms + timing.lateness_ms <= self.watermark_:
                del self.rows_[(model_id, start)]
                blob = encode_columns(concat_columns(parts))
                rows_due.setdefault(model_id, []).append((start, blob))
        crossed = {m for m in self.timings if self._crossed(m)}
        champion_of = {c: m for m, cs in self.shadows.items() for c in cs}
        reports = []
        for model_id in sorted(crossed | set(due) | set(rows_due)):
            champion = champion_of.get(model_id)
            if champion in rows_due and self.source == FEATURES:
                reports.append(
                    PartialReport(
                        model_id, self.partition, self.watermark_, [], rows_due[champion],
                        CHAMPION,
                    )
                )  # fmt: skip
            held = sorted(
                due.get(model_id, []), key=lambda vp: (vp[1].window_start, vp[0], vp[1].key)
            )
            rows = rows_due.get(model_id, [])
            reports.append(
                PartialReport(
                    model_id, self.partition, self.watermark_, [p for _, p in held], rows,
                    self.source, [v for v, _ in held],
                )
            )  # fmt: skip
        self.reported_ = {m: self._closed_panes(m) for m in self.timings}
        return reports

    def _closed_panes(self, model_id: str) -> int:
        timing = self.timings[model_id]
        return (self.watermark_ - timing.lateness_ms) // timing.pane_ms

    def _crossed(self, model_id: str) -> bool:
        if self.watermark_ == _NO_WATERMARK:
            return False
        reported = self.reported_.get(model_id)
        return reported is None or self._closed_panes(model_id) > reported

    # checkpoint: the open panes, the watermark and the offset they cover
    def state(self) -> dict[str, Any]:
        return {
            "offset": self.offset_,
            "watermark": self.watermark_,
            "open": [
                [key[3], _b64(p.to_bytes())] if key[3] else _b64(p.to_bytes())
                for key, p in self.open_.items()
            ],
            "rows": [
                [model_id, start, _b64(encode_columns(concat_columns(parts)))]
                for (model_id, start), parts in self.rows_.items()
            ],
        }

    def load(self, state: Mapping[str, Any]) -> None:
        self.offset_ = int(state["offset"])
        self.watermark_ = int(state["watermark"])
        self.open_ = {}
        for entry in state["open"]:
            version, blob = entry if isinstance(entry, list) else ("", entry)
            prof = WindowProfile.from_bytes(_unb64(blob))
            self.open_[(prof.model_id, prof.window_start, prof.segment or "", version)] = prof
        self.rows_ = {
            (model_id, start): [decode_columns(_unb64(blob))]
            for model_id, start, blob in state.get("rows", [])
        }
        self.reported_ = {m: self._closed_panes(m) for m in self.timings}


# -- stage 2 -----------------------------------------------------------------------------------


@dataclass
class MergeResult:
    alerts: list[Alert]
    closed: list[int]  # pane ends closed by this call
    partitions_reported: list[int]  # per closed pane


class ModelMerger:
    """Stage 2 for one model: partials from every input partition in, alerts out.

    With concept drift on (`outcome_partitions` > 0) a pane also waits for every
    outcomes partition; at close, the pane's predictions and outcomes are fed to the
    monitor's label join in (event time, prediction id) order, so the join sees the same
    calls however the partitions interleaved. A challenger (``shadow:``) also gets its
    champion's prediction rows (CHAMPION reports) and pairs them at close the same way.
    With `versioned`, the monitor is a `VersionRegistry` fed (version, profile) pairs.

    >>> class Quiet:
    ...     def add_profiles(self, profiles): return []
    ...     def advance(self, watermark_ms): return []
    ...     def snapshot(self): return b""
    >>> merger = ModelMerger("m", Quiet(), Timing(1_000, 0), partitions=2, idle_timeout_ms=5_000)
    >>> first = PartialReport("m", 0, 2_500, rows=[(0, b"")])  # pane [0, 1000) has data
    >>> merger.observe(first).closed  # partition 1 not heard from
    []
    >>> merger.observe(PartialReport("m", 1, 1_200)).closed
    [1000]
    >>> merger.tick(now_ms=0).closed, merger.tick(now_ms=5_000).closed  # idle partition 1
    ([], [2000])
    """

    def __init__(
        self,
        model_id: str,
        monitor: StageMonitor,
        timing: Timing,
        partitions: int,
        idle_timeout_ms: int,
        outcome_partitions: int = 0,
        regression: bool = False,
        versioned: bool = False,
    ) -> None:
        self.model_id = model_id
        self.versioned = versioned
        self.monitor = monitor
        self.timing = timing
        self.partitions = partitions
        self.outcome_partitions = outcome_partitions
        self.regression = regression
        self.idle_timeout_ms = idle_timeout_ms
        self.watermarks_: dict[tuple[str, int], int] = {}
        # pane end -> (segment, partition, version) -> partial
        self.partials_: dict[int, dict[tuple[str, int, str], WindowProfile]] = {}
        self.rows_: dict[int, dict[tuple[str, int], bytes]] = {}  # pane end -> (source, p)
        self.closed_end_ = _NO_WATERMARK  # every pane ending at or before this is closed
        self.due_since_: int | None = None  # wall ms when a pane first waited on idle ones

    def observe(self, report: PartialReport) -> MergeResult:
        """Store a report (idempotent) and close the panes every partition has passed."""
        if report.source == OUTCOMES and not self.outcome_partitions:
            return MergeResult([], [], [])
        key = (report.source, report.partition)
        if report.source != CHAMPION:  # a champion copy travels with the challenger's report
            self.watermarks_[key] = max(self.watermarks_.get(key, _NO_WATERMARK), report.watermark)
        for version, prof in report.versioned():
            if prof.window_end > self.closed_end_:  # a re-sent partial of a closed pane: drop
                held = self.partials_.setdefault(prof.window_end, {})
                held[(prof.segment or "", report.partition, version)] = prof
        for start, blob in report.rows:
            end = start + self.timing.pane_ms
            if end > self.closed_end_:
                self.rows_.setdefault(end, {})[key] = blob
        return self._close(self._complete_watermark())

    def tick(self, now_ms: int) -> MergeResult:
        """Idle timeout: close panes the reporting partitions passed `idle_timeout` ago."""
        if not self.watermarks_:
            return MergeResult([], [], [])
        ahead = max(self.watermarks_.values())
        if self._first_pane_end(ahead) is None:
            self.due_since_ = None
            return MergeResult([], [], [])
        if self.due_since_ is None:
            self.due_since_ = now_ms
        if now_ms - self.due_since_ < self.idle_timeout_ms:
            return MergeResult([], [], [])
        self.due_since_ = None
        return self._close(ahead)

    def _complete_watermark(self) -> int:
        if len(self.watermarks_) < self.partitions + self.outcome_partitions:
            return _NO_WATERMARK
        return min(self.watermarks_.values())

    def _first_pane_end(self, watermark: int) -> int | None:
        """End of the first unclosed pane `watermark` has passed, if any."""
        lateness, pane = self.timing.lateness_ms, self.timing.pane_ms
        last_due = (watermark - lateness) // pane * pane
        if last_due <= self.closed_end_ or watermark == _NO_WATERMARK:
            return None
        if self.closed_end_ == _NO_WATERMARK:  # start at the first pane holding data
            held = (e for e in itertools.chain(self.partials_, self.rows_) if e <= last_due)
            return min(held, default=None)
        if last_due - self.closed_end_ > _MAX_EMPTY_STEPS * pane:  # a jump in event time
            log.warning(
                "model %s: watermark jumped to %d, closing at once", self.model_id, last_due
            )
            return last_due
        # then every pane in turn, empty or not: the monitor sees the same advance() calls
        # whatever watermarks the reports carried (label-join timing depends on them)
        return self.closed_end_ + pane

    def _close(self, watermark: int) -> MergeResult:
        result = MergeResult([], [], [])
        lateness = self.timing.lateness_ms
        while (end := self._first_pane_end(watermark)) is not None:
            reported = sum(1 for w in self.watermarks_.values() if w >= end + lateness)
            merged = _merge_by_segment(self.partials_.pop(end, {}))
            if not self.versioned:
                merged = [prof for _, prof in merged]
            alerts = self.monitor.add_profiles(merged) if merged else []
            alerts += self._feed_rows(self.rows_.pop(end, {}))
            alerts += self.monitor.advance(end + lateness)
            result.alerts += [_with_reported(a, reported) for a in alerts]
            result.closed.append(end)
            result.partitions_reported.append(reported)
            self.closed_end_ = end
        if result.closed:
            self.due_since_ = None
        return result

    def _feed_rows(self, held: Mapping[tuple[str, int], bytes]) -> list[Alert]:
        """A pane's predictions (the champion's too), then its outcomes, to the monitor."""
        observe = getattr(self.monitor, "observe_joined_pane", None)
        if observe is None or not held:
            return []

        def rows(source: str) -> dict[str, np.ndarray] | None:
            return _canonical([decode_columns(held[k]) for k in sorted(held) if k[0] == source])

        outs = rows(OUTCOMES)
        outcomes = None
        if outs is not None:
            label = outs["value"] if self.regression else _class_labels(outs)
            outcomes = OutcomeBatch(self.model_id, outs["prediction_id"], outs["event_time"], label)
        return list(
            observe(
                _predictions(self.model_id, rows(FEATURES)),
                outcomes,
                champion=_predictions(self.model_id, rows(CHAMPION)),
            )
        )

    def state(self) -> dict[str, Any]:
        return {
            "monitor": _b64(self.monitor.snapshot()),
            "watermarks": {f"{s}:{p}": w for (s, p), w in self.watermarks_.items()},
            "partials": [
                [end, seg, p, _b64(prof.to_bytes()), *([version] if version else [])]
                for end, held in self.partials_.items()
                for (seg, p, version), prof in held.items()
            ],
            "rows": [
                [end, s, p, _b64(blob)]
                for end, held in self.rows_.items()
                for (s, p), blob in held.items()
            ],
            "closed_end": self.closed_end_,
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        restore: Callable[[bytes], StageMonitor],
        model_id: str,
        timing: Timing,
        partitions: int,
        idle_timeout_ms: int,
        outcome_partitions: int = 0,
        regression: bool = False,
        versioned: bool = False,
    ) -> ModelMerger:
        monitor = restore(_unb64(state["monitor"]))
        merger = cls(
            model_id,
            monitor,
            timing,
            partitions,
            idle_timeout_ms,
            outcome_partitions,
            regression,
            versioned,
        )
        for key, w in state["watermarks"].items():
            source, p = key.rsplit(":", 1)
            merger.watermarks_[(source, int(p))] = int(w)
        for end, seg, p, blob, *version in state["partials"]:
            prof = WindowProfile.from_bytes(_unb64(blob))
            merger.partials_.setdefault(end, {})[(seg, p, "".join(version))] = prof
        for end, source, p, blob in state.get("rows", []):
            merger.rows_.setdefault(end, {})[(source, p)] = _unb64(blob)
        merger.closed_end_ = int(state["closed_end"])
        return merger


def _predictions(model_id: str, rows: Mapping[str, np.ndarray] | None) -> FeatureBatch | None:
    if rows is None:
        return None
    return FeatureBatch(
        model_id,
        rows["prediction_id"],
        rows["event_time"],
        score=rows["score"],
        label=rows["label"],
    )


def _canonical(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    """Rows of several partitions in (event time, prediction id) order: arrival-independent."""
    parts = [p for p in parts if len(p["event_time"])]
    if not parts:
        return None
    cols = concat_columns(parts)
    order = np.lexsort((cols["prediction_id"].astype(str), cols["event_time"]))
    return {k: v[order] for k, v in cols.items()}


def _class_labels(outcomes: Mapping[str, np.ndarray]) -> np.ndarray:
    """The outcome's class: its label, else its value (0/1 for binary targets)."""
    label = outcomes["label"].copy()
    missing = np.array([v is None for v in label.tolist()], dtype=bool)
    if missing.any():
        label[missing] = outcomes["value"][missing]
    return label


def _merge_by_segment(
    held: Mapping[tuple[str, int, str], WindowProfile],
) -> list[tuple[str, WindowProfile]]:
    """(version, profile) per version and segment, partitions merged in a fixed order (float
    sums are exact-repeat)."""
    merged: dict[tuple[str, str], WindowProfile] = {}
    for seg, p, version in sorted(held, key=lambda k: (k[2], k[0], k[1])):
        prof, key = held[(seg, p, version)], (version, seg)
        merged[key] = prof if key not in merged else merged[key].merge(prof)
    return [(version, merged[(version, seg)]) for version, seg in sorted(merged)]


def _with_reported(alert: Alert, reported: int) -> Alert:
    if alert.partitions_reported is not None:
        return alert
    return dataclasses.replace(alert, partitions_reported=reported)


# -- checkpoint codec --------------------------------------------------------------------------


def encode_checkpoint(state: Mapping[str, Any]) -> bytes:
    """A stage's state as compact JSON (profiles and snapshots inside as base64)."""
    return json.dumps(state, separators=(",", ":")).encode()


def decode_checkpoint(data: bytes) -> dict[str, Any]:
    return json.loads(data)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)
