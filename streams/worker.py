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
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from driftwire.detectors.alerts import Alert
from driftwire.detectors.batch import FeatureBatch
from driftwire.detectors.profile import WindowProfile

_NO_WATERMARK = -(2**62)
_LEN = struct.Struct(">I")


class StageMonitor(Protocol):
    """What the stages need from the engine's `Monitor`."""

    def profile(self, batch: FeatureBatch) -> list[WindowProfile]: ...

    def add_profiles(self, profiles: list[WindowProfile]) -> list[Alert]: ...

    def advance(self, watermark_ms: int) -> list[Alert]: ...

    def snapshot(self) -> bytes: ...


@dataclass(frozen=True)
class Timing:
    """A model's pane length (the window hop) and allowed lateness, in ms."""

    pane_ms: int
    lateness_ms: int

    def pane_start(self, times: np.ndarray) -> np.ndarray:
        return times - times % self.pane_ms


# -- the internal partials message ------------------------------------------------------------


@dataclass
class PartialReport:
    """Stage 1 -> stage 2: a partition's watermark and the panes it has just finalised."""

    model_id: str
    partition: int
    watermark: int
    profiles: list[WindowProfile] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        blobs = [p.to_bytes() for p in self.profiles]
        head = json.dumps(
            {"m": self.model_id, "p": self.partition, "w": self.watermark, "n": len(blobs)}
        ).encode()
        parts = [_LEN.pack(len(head)), head]
        for blob in blobs:
            parts += [_LEN.pack(len(blob)), blob]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> PartialReport:
        chunks = _split(data)
        head = json.loads(chunks[0])
        if len(chunks) != head["n"] + 1:
            raise ValueError("truncated partial report")
        profiles = [WindowProfile.from_bytes(c) for c in chunks[1:]]
        return cls(head["m"], head["p"], head["w"], profiles)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PartialReport) and self.to_bytes() == other.to_bytes()


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


# -- stage 1 -----------------------------------------------------------------------------------


@dataclass
class ProfileResult:
    """What one batch did in stage 1."""

    reports: list[PartialReport]
    unknown: list[int]  # indices (into the batch) of events of unknown models
    late: int  # events dropped because their pane had already been emitted
    profiled: int


class PartitionProfiler:
    """Stage 1 for one features partition: decode-side batches in, final pane partials out.

    Args:
        partition: the features partition this instance owns.
        monitors: the engine monitor of each configured model (only `profile` is used).
        timings: pane length and lateness per model.
        batch_of: turns decoded records of one model into a FeatureBatch.
    """

    def __init__(
        self,
        partition: int,
        monitors: Mapping[str, StageMonitor],
        timings: Mapping[str, Timing],
        batch_of: Callable[[str, Sequence[Mapping[str, Any]]], FeatureBatch],
    ) -> None:
        self.partition = partition
        self.monitors = monitors
        self.timings = timings
        self.batch_of = batch_of
        self.offset_ = 0  # next offset to read
        self.watermark_ = _NO_WATERMARK
        self.open_: dict[tuple[str, int, str], WindowProfile] = {}
        self.reported_: dict[str, int] = {}  # per model: closed panes already reported

    def observe(self, records: Sequence[Mapping[str, Any]], next_offset: int) -> ProfileResult:
        """Profile decoded records (in partition order) read up to `next_offset`."""
        result = ProfileResult([], [], 0, 0)
        if records:
            times = np.fromiter((r["event_time"] for r in records), np.int64, len(records))
            models = np.array([r["model_id"] for r in records], dtype=object)
            # watermark *before* each event: lateness must not depend on batch cuts
            before = np.maximum.accumulate(np.concatenate(([self.watermark_], times)))[:-1]
            for model_id in np.unique(models).tolist():
                rows = np.flatnonzero(models == model_id)
                if model_id not in self.monitors:
                    result.unknown.extend(rows.tolist())
                    continue
                result.late += self._profile(model_id, records, rows, times, before)
                result.profiled += len(rows)
            self.watermark_ = max(self.watermark_, int(before[-1]), int(times.max()))
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
        if len(kept):
            batch = self.batch_of(model_id, [records[i] for i in kept.tolist()])
            for prof in self.monitors[model_id].profile(batch):
                prof.partitions = frozenset({self.partition})
                key = (model_id, prof.window_start, prof.segment or "")
                held = self.open_.get(key)
                self.open_[key] = prof if held is None else held.merge(prof)
        return len(rows) - len(kept)

    def _emit_due(self) -> list[PartialReport]:
        """One report per model whose pane boundary the watermark crossed."""
        due: dict[str, list[WindowProfile]] = {}
        for key, prof in list(self.open_.items()):
            if prof.window_end + self.timings[key[0]].lateness_ms <= self.watermark_:
                due.setdefault(key[0], []).append(self.open_.pop(key))
        crossed = {m for m in self.timings if self._crossed(m)}
        reports = []
        for model_id in sorted(crossed | set(due)):
            profiles = sorted(due.get(model_id, []), key=lambda p: (p.window_start, p.key))
            reports.append(PartialReport(model_id, self.partition, self.watermark_, profiles))
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
            "open": [_b64(p.to_bytes()) for p in self.open_.values()],
        }

    def load(self, state: Mapping[str, Any]) -> None:
        self.offset_ = int(state["offset"])
        self.watermark_ = int(state["watermark"])
        self.open_ = {}
        for blob in state["open"]:
            prof = WindowProfile.from_bytes(_unb64(blob))
            self.open_[(prof.model_id, prof.window_start, prof.segment or "")] = prof
        self.reported_ = {m: self._closed_panes(m) for m in self.timings}


# -- stage 2 -----------------------------------------------------------------------------------


@dataclass
class MergeResult:
    alerts: list[Alert]
    closed: list[int]  # pane ends closed by this call
    partitions_reported: list[int]  # per closed pane


class ModelMerger:
    """Stage 2 for one model: partials from every features partition in, alerts out.

    >>> class Quiet:
    ...     def add_profiles(self, profiles): return []
    ...     def advance(self, watermark_ms): return []
    ...     def snapshot(self): return b""
    >>> merger = ModelMerger("m", Quiet(), Timing(1_000, 0), partitions=2, idle_timeout_ms=5_000)
    >>> merger.observe(PartialReport("m", 0, 2_500)).closed  # partition 1 not heard from
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
    ) -> None:
        self.model_id = model_id
        self.monitor = monitor
        self.timing = timing
        self.partitions = partitions
        self.idle_timeout_ms = idle_timeout_ms
        self.watermarks_: dict[int, int] = {}
        self.partials_: dict[int, dict[tuple[str, int], WindowProfile]] = {}  # pane end -> ...
        self.closed_end_ = _NO_WATERMARK  # every pane ending at or before this is closed
        self.due_since_: int | None = None  # wall ms when a pane first waited on idle ones

    def observe(self, report: PartialReport) -> MergeResult:
        """Store a report (idempotent) and close the panes every partition has passed."""
        p = report.partition
        self.watermarks_[p] = max(self.watermarks_.get(p, _NO_WATERMARK), report.watermark)
        for prof in report.profiles:
            if prof.window_end > self.closed_end_:  # a re-sent partial of a closed pane: drop
                self.partials_.setdefault(prof.window_end, {})[(prof.segment or "", p)] = prof
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
        if len(self.watermarks_) < self.partitions:
            return _NO_WATERMARK
        return min(self.watermarks_.values())

    def _first_pane_end(self, watermark: int) -> int | None:
        """End of the first unclosed pane `watermark` has passed, if any."""
        lateness, pane = self.timing.lateness_ms, self.timing.pane_ms
        last_due = (watermark - lateness) // pane * pane
        if last_due <= self.closed_end_ or watermark == _NO_WATERMARK:
            return None
        # panes holding partials close one by one; an empty stretch closes in one step
        return min((e for e in self.partials_ if e <= last_due), default=last_due)

    def _close(self, watermark: int) -> MergeResult:
        result = MergeResult([], [], [])
        lateness = self.timing.lateness_ms
        while (end := self._first_pane_end(watermark)) is not None:
            reported = sum(1 for w in self.watermarks_.values() if w >= end + lateness)
            held = self.partials_.pop(end, {})
            merged = _merge_by_segment(held)
            alerts = self.monitor.add_profiles(merged) if merged else []
            alerts += self.monitor.advance(end + lateness)
            result.alerts += [_with_reported(a, reported) for a in alerts]
            result.closed.append(end)
            result.partitions_reported.append(reported)
            self.closed_end_ = end
        if result.closed:
            self.due_since_ = None
        return result

    def state(self) -> dict[str, Any]:
        return {
            "monitor": _b64(self.monitor.snapshot()),
            "watermarks": {str(p): w for p, w in self.watermarks_.items()},
            "partials": [
                [end, seg, p, _b64(prof.to_bytes())]
                for end, held in self.partials_.items()
                for (seg, p), prof in held.items()
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
    ) -> ModelMerger:
        merger = cls(
            model_id, restore(_unb64(state["monitor"])), timing, partitions, idle_timeout_ms
        )
        merger.watermarks_ = {int(p): int(w) for p, w in state["watermarks"].items()}
        for end, seg, p, blob in state["partials"]:
            merger.partials_.setdefault(end, {})[(seg, p)] = WindowProfile.from_bytes(_unb64(blob))
        merger.closed_end_ = int(state["closed_end"])
        return merger


def _merge_by_segment(held: Mapping[tuple[str, int], WindowProfile]) -> list[WindowProfile]:
    """One profile per segment, partitions merged in a fixed order (float sums are exact-repeat)."""
    merged: dict[str, WindowProfile] = {}
    for seg, p in sorted(held):
        prof = held[(seg, p)]
        merged[seg] = prof if seg not in merged else merged[seg].merge(prof)
    return [merged[s] for s in sorted(merged)]


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
