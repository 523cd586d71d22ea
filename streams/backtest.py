"""Backtests: replay history through the live worker's engine path, inject drifts, score.

The replay drives exactly what `driftwire worker` runs: per features partition a stage-1
:class:`~driftwire.streams.worker.PartitionProfiler` (the worker's own class; for columnar
file data a subclass that profiles whole batches with the same lateness rule), and per
model the stage-2 :class:`~driftwire.streams.worker.ModelMerger`, which closes panes once
every partition's event-time watermark passed them and calls ``monitor.advance`` pane by
pane. The partials go from stage 1 to stage 2 in memory instead of through the partials
topic. So a backtest over a topic range yields the alerts (same deterministic ids, same
values) that the worker published for the same data; ``partitions_reported`` (how many
partitions had reported when a pane closed) is the one field that can differ, when the
live worker closed a pane on its idle timeout.

Outcomes (concept drift) take the worker's path too: outcome partitions have their own
stage-1 profilers, and each model's merger feeds a pane's predictions and outcomes to the
label join when it closes the pane. File sources are one features and one outcomes
"partition" whose watermarks follow the merged replay.

A backtest config is the usual config file (``models``, ``topics``, ``kafka``...) with a
``backtest`` section::

    backtest:
      source: files            # or: topic (reads topics.features / topics.outcomes)
      features: [history/features.parquet]
      outcomes: [history/outcomes.parquet]
      start: 2026-11-01T00:00:00Z   # topic source: time range (end optional)
      end: 2026-11-02T00:00:00Z
      inject:                  # what-if drifts, recorded as ground truth
        - {kind: shift, feature: amount, at: 2026-11-01T12:00:00Z, amount: 2.5}
      truth: incidents.yaml    # known change points: [{model, kind, feature, at, label}]
      report: {json: backtest.json, html: backtest.html}
      sweep: {drift.alpha: [1.0e-6, 1.0e-4, 1.0e-2]}
      max_delay: 2h            # a detection later than this counts as missed
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml
from driftwire.detectors.alerts import Alert, AlertLifecycle, Verdict
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.config import EngineConfig, ModelConfig, parse_duration
from driftwire.detectors.inject import Injection, Injector
from driftwire.detectors.monitor import Monitor
from driftwire.detectors.reference import ReferenceProfile
from driftwire.detectors.scoring import (
    ChangePoint,
    Score,
    ScoreCard,
    Window,
    change_points_from_records,
    parse_time_ms,
    score_alerts,
    score_with_baselines,
)
from driftwire.detectors.shadow import challengers_of
from driftwire.detectors.timeline import ReferenceTimeline, same_columns
from driftwire.detectors.versions import VersionRegistry
from driftwire.detectors.windows import NO_WATERMARK
from driftwire.streams.replay import (
    NO_TIME,
    FileSource,
    PartitionRange,
    Step,
    TopicRange,
    concat_features,
    concat_outcomes,
    topic_steps,
)
from driftwire.streams.worker import (
    FEATURES,
    OUTCOMES,
    ModelMerger,
    PartialReport,
    PartitionProfiler,
    ProfileResult,
    Timing,
    feature_batch,
    prediction_columns,
)
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class BacktestSpec:
    """The `backtest` section, paths resolved against the config file's folder."""

    source: str = "files"  # "files" | "topic"
    features: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    format: str = "auto"
    model_id: str | None = None  # for files without a model_id column
    start_ms: int | None = None
    end_ms: int | None = None
    injections: tuple[Injection, ...] = ()
    truth: str | None = None
    json_path: str | None = None
    html_path: str | None = None
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    max_delay_ms: int | None = None
    chunk_rows: int = 65_536
    # (effective from, profile file): a new reference during the replay, as published live
    reference_changes: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        if self.source not in ("files", "topic"):
            raise ValueError(f"backtest.source must be 'files' or 'topic', got {self.source!r}")
        if self.source == "files" and not self.features:
            raise ValueError("backtest.features: a file source needs at least one features file")
        if len(self.sweep) > 2:
            raise ValueError("backtest.sweep: at most two settings (a grid over one or two)")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], base_dir: str | Path = ".") -> BacktestSpec:
        base = Path(base_dir)

        def path(p: str) -> str:
            return str(p if Path(p).is_absolute() else base / p)

        def paths(value: Any) -> tuple[str, ...]:
            items = [value] if isinstance(value, str) else list(value or [])
            return tuple(path(p) for p in items)

        report = raw.get("report") or {}
        known = {
            "source", "features", "outcomes", "format", "model_id", "start", "end", "inject",
            "truth", "report", "sweep", "max_delay", "chunk_rows", "reference_changes",
        }  # fmt: skip
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"backtest: unknown keys {sorted(unknown)}")
        return cls(
            source=str(raw.get("source", "files")),
            features=paths(raw.get("features")),
            outcomes=paths(raw.get("outcomes")),
            format=str(raw.get("format", "auto")),
            model_id=raw.get("model_id"),
            start_ms=None if raw.get("start") is None else parse_time_ms(raw["start"]),
            end_ms=None if raw.get("end") is None else parse_time_ms(raw["end"]),
            injections=tuple(Injection.from_mapping(i) for i in raw.get("inject") or []),
            truth=path(raw["truth"]) if raw.get("truth") else None,
            json_path=path(report["json"]) if report.get("json") else None,
            html_path=path(report["html"]) if report.get("html") else None,
            sweep=parse_sweep(raw.get("sweep") or {}),
            max_delay_ms=None if raw.get("max_delay") is None else parse_duration(raw["max_delay"]),
            chunk_rows=int(raw.get("chunk_rows", 65_536)),
            reference_changes=tuple(
                (parse_time_ms(c["at"]), path(c["profile"]))
                for c in _changes(raw.get("reference_changes"))
            ),
        )


def _changes(raw: Any) -> list[Mapping[str, Any]]:
    """``[{at: TIME, profile: PATH}, ...]``, each checked for both keys."""
    items = list(raw or [])
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or set(item) != {"at", "profile"}:
            raise ValueError(
                f"backtest.reference_changes[{i}]: expected {{at: TIME, profile: PATH}}, "
                f"got {item!r}"
            )
    return items


def parse_sweep(raw: Mapping[str, Any] | Sequence[str]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``{"drift.alpha": [1e-6, 1e-4]}`` or ``["drift.alpha=1e-6,1e-4"]`` -> settings."""
    if isinstance(raw, Mapping):
        items = [(str(k), tuple(map(_scalar, v))) for k, v in raw.items()]
    else:
        items = []
        for text in raw:
            name, _, values = text.partition("=")
            if not values:
                raise ValueError(f"--sweep {text!r}: expected PATH=V1,V2,...")
            items.append((name.strip(), tuple(_scalar(v) for v in values.split(","))))
    for name, values in items:
        if not values:
            raise ValueError(f"sweep {name}: no values")
    return tuple(items)


def _scalar(value: Any) -> Any:
    """'1e-6' -> 1e-06 (YAML 1.1 reads it as a string), '5' -> 5, 'ks' -> 'ks'."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def load_truth(path: str | Path) -> list[ChangePoint]:
    """A JSON or YAML list of ``{model, kind, feature, at, label}`` change points."""
    raw = yaml.safe_load(Path(path).read_text())  # YAML is a superset of JSON
    if isinstance(raw, Mapping):
        raw = raw.get("changes") or raw.get("truth") or []
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a list of change points")
    return change_points_from_records(raw)


# --------------------------------------------------------------------------- sweep settings


def with_setting(model: ModelConfig, path: str, value: Any) -> ModelConfig:
    """A copy of `model` with the dotted `path` (dataclass fields, then dict keys) set."""
    head, _, rest = path.partition(".")
    if isinstance(model, Mapping):
        inner = model.get(head)
        return {**model, head: value if not rest else with_setting(inner, rest, value)}  # type: ignore[return-value]
    if not dataclasses.is_dataclass(model) or head not in {
        f.name for f in dataclasses.fields(model)
    }:
        raise ValueError(f"sweep: no setting {head!r} in {type(model).__name__}")
    inner = getattr(model, head)
    return dataclasses.replace(
        model, **{head: value if not rest else with_setting(inner, rest, value)}
    )  # type: ignore[arg-type]


def sweep_grid(
    sweep: Sequence[tuple[str, Sequence[Any]]],
) -> list[tuple[str, dict[str, Any]]]:
    if not sweep:
        return []
    names = [name for name, _ in sweep]
    grid = itertools.product(*(values for _, values in sweep))
    return [
        (
            ", ".join(f"{n}={v}" for n, v in zip(names, combo, strict=True)),
            dict(zip(names, combo, strict=True)),
        )
        for combo in grid
    ]


def apply_settings(engine: EngineConfig, settings: Mapping[str, Any]) -> EngineConfig:
    models = []
    for model in engine.models:
        for path, value in settings.items():
            model = with_setting(model, path, value)
        models.append(model)
    return dataclasses.replace(engine, models=models)


# --------------------------------------------------------------------------- results


@dataclass
class VerdictSeries:
    """One detector's statistic per closed window, for one feature (or the model)."""

    model: str
    kind: str
    detector: str
    statistic: str
    feature: str | None
    segment: str | None
    window_end: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    threshold: list[float] = field(default_factory=list)
    breached: list[bool] = field(default_factory=list)
    p_value: list[float | None] = field(default_factory=list)

    @property
    def tested_on_p(self) -> bool:
        """True when the threshold applies to the (corrected) p-value, not to `value`."""
        return bool(self.p_value) and all(p is not None for p in self.p_value)


@dataclass
class PerformanceSeries:
    """Model performance per window from the replayed outcomes, with label coverage."""

    model: str
    metric: str  # "error_rate" or "mae"
    window_start: list[int]
    value: list[float | None]
    coverage: list[float]
    count: list[int]


@dataclass
class SweepRow:
    setting: str
    score: Score
    alerts: int


@dataclass
class BacktestResult:
    source: str
    models: list[str]
    start_ms: int | None
    end_ms: int | None
    events: int
    seconds: float
    alerts: list[Alert]
    windows: list[Window]
    series: list[VerdictSeries] = field(default_factory=list)
    performance: list[PerformanceSeries] = field(default_factory=list)
    truth: list[ChangePoint] = field(default_factory=list)
    card: ScoreCard | None = None
    sweep: list[SweepRow] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    event_times: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- engine path


class RecordingLifecycle(AlertLifecycle):
    """The monitor's own lifecycle, same state and same alerts, that also keeps every
    verdict it sees: the per-window statistics the report plots, alert or not."""

    def __init__(self, inner: AlertLifecycle, sink: list[Verdict]) -> None:
        self.__dict__.update(inner.__dict__)
        self.verdicts_ = sink

    def observe(self, verdict: Verdict) -> list[Alert]:
        self.verdicts_.append(verdict)
        return super().observe(verdict)


class BatchProfiler(PartitionProfiler):
    """Stage 1 fed columnar, time-sorted batches (files) instead of decoded records.

    Same lateness rule as :meth:`PartitionProfiler.observe` (an event is late when its pane
    end + lateness is at or before the highest event time before it in the partition),
    computed over the step's batches, which for time-sorted data never drops anything; and
    the same per-pane prediction / outcome rows for the models with concept drift on.
    """

    def observe_batches(self, batches: Sequence[FeatureBatch | OutcomeBatch]) -> ProfileResult:
        result = ProfileResult([], [], 0, 0)
        high = self.watermark_
        for batch in batches:
            if batch.model_id not in self.timings:
                result.unknown.extend(range(len(batch)))
                continue
            timing = self.timings[batch.model_id]
            times = batch.event_time
            before = np.maximum.accumulate(np.concatenate(([self.watermark_], times)))[:-1]
            on_time = timing.pane_start(times) + timing.pane_ms + timing.lateness_ms > before
            kept = batch if on_time.all() else batch.take(on_time)
            result.late += len(batch) - len(kept)
            result.profiled += len(kept)
            if isinstance(kept, FeatureBatch):
                self._profile_batch(kept)
            elif batch.model_id in self.keep_rows:
                self._keep_rows(batch.model_id, outcome_batch_columns(kept))
            if len(times):
                high = max(high, int(times.max()))
        self.watermark_ = high
        result.reports = self._emit_due()
        return result

    def _profile_batch(self, batch: FeatureBatch) -> None:
        self._hold_profiles(batch)
        if batch.model_id in self.keep_rows:
            self._keep_rows(batch.model_id, prediction_columns(batch))

    def _keep_rows(self, model_id: str, columns: dict[str, np.ndarray]) -> None:
        starts = self.timings[model_id].pane_start(columns["event_time"])
        for start in np.unique(starts).tolist():
            part = {k: v[starts == start] for k, v in columns.items()}
            self.rows_.setdefault((model_id, start), []).append(part)

    def finish(self, watermark: int) -> list[PartialReport]:
        """No event at or before `watermark` is still to come: emit the panes it closes."""
        self.watermark_ = max(self.watermark_, watermark)
        return self._emit_due()


def outcome_batch_columns(batch: OutcomeBatch) -> dict[str, np.ndarray]:
    """The worker's outcome columns (class `label` or numeric `value`) from a batch."""
    n = len(batch)
    if batch.label.dtype.kind == "f":
        return {
            "prediction_id": batch.prediction_id.astype(object),
            "event_time": batch.event_time,
            "label": np.full(n, None, dtype=object),
            "value": batch.label,
        }
    return {
        "prediction_id": batch.prediction_id.astype(object),
        "event_time": batch.event_time,
        "label": batch.label.astype(object),
        "value": np.full(n, np.nan),
    }


@dataclass
class ModelSetup:
    """How to build one model's monitor, as the worker's `ModelEngine` does."""

    config: ModelConfig
    reference: ReferenceProfile
    changes: tuple[tuple[int, ReferenceProfile], ...] = ()  # (effective from, profile)

    @property
    def timing(self) -> Timing:
        window = self.config.window
        return Timing(int(window.hop or window.size), window.allowed_lateness)

    @property
    def concept(self) -> bool:
        return self.config.concept is not None

    @property
    def versioned(self) -> bool:
        return self.config.versions is not None

    def new_monitor(self) -> Monitor | VersionRegistry:
        """What the worker's stage 2 runs for this model (see `build_engines`)."""
        if self.versioned:
            return VersionRegistry(self.config, self.reference)
        monitor = Monitor(self.config, self.reference)
        for start, reference in self.timeline().later_than(NO_WATERMARK):
            monitor.rebase(reference, start)
        return monitor

    def timeline(self) -> ReferenceTimeline:
        timeline = ReferenceTimeline(self.timing.pane_ms, self.reference)
        for effective_from, reference in sorted(self.changes, key=lambda c: c[0]):
            timeline.add(reference, effective_from)
        return timeline

    def batch(self, records: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        segment = self.config.segments.key if self.config.segments else None
        ref = self.reference
        return feature_batch(records, tuple(ref.numeric), tuple(ref.categorical), segment)


class EnginePath:
    """The worker's stage 1 per input partition + stage 2 per model, wired in memory.

    `sync` (file sources): after each step every partition's watermark moves to the step
    watermark, since the merged files hold no earlier event still to come. Topic sources
    keep the worker's own per-partition watermarks.
    """

    def __init__(
        self,
        setups: Mapping[str, ModelSetup],
        partitions: Sequence[int],
        outcome_partitions: Sequence[int] = (),
        injector: Injector | None = None,
        tape: Tape | None = None,
        sync: bool = False,
    ) -> None:
        self.setups = setups
        self.injector = injector
        self.tape = tape
        self.sync = sync
        self.verdicts: dict[str, list[Verdict]] = {m: [] for m in setups}
        profile_monitors = {m: s.new_monitor() for m, s in setups.items()}
        timings = {m: s.timing for m, s in setups.items()}
        shadows = challengers_of([s.config for s in setups.values()])
        shadowing = {c for cs in shadows.values() for c in cs} | set(shadows)
        rows = frozenset(m for m, s in setups.items() if s.concept or m in shadowing)

        def profiler(p: int, source: str) -> BatchProfiler:
            return BatchProfiler(
                p, profile_monitors, timings, self._batch_of, rows, source, shadows
            )

        self.profilers = {p: profiler(p, FEATURES) for p in partitions}
        self.outcome_profilers = {p: profiler(p, OUTCOMES) for p in outcome_partitions}
        self.mergers = {
            m: ModelMerger(
                m, self._monitor(s), s.timing, len(partitions), idle_timeout_ms=0,
                outcome_partitions=len(outcome_partitions) if s.concept else 0,
                regression=bool(s.config.concept and s.config.concept.task == "regression"),
                versioned=s.versioned,
            )
            for m, s in setups.items()
        }  # fmt: skip
        self.unknown_models = 0
        self.late = 0

    def _monitor(self, setup: ModelSetup) -> Monitor | VersionRegistry:
        monitor = setup.new_monitor()
        sink = self.verdicts[setup.config.id]
        monitor.lifecycle_ = RecordingLifecycle(monitor.lifecycle_, sink)
        concept = getattr(monitor, "concept_", None)
        if concept is not None:
            concept.lifecycle = RecordingLifecycle(concept.lifecycle, sink)
        return monitor

    def _batch_of(self, model_id: str, records: Sequence[Mapping[str, Any]]) -> FeatureBatch:
        return self._seen(self.setups[model_id].batch(records))

    def _seen(self, batch: FeatureBatch) -> FeatureBatch:
        if self.injector is not None:
            batch = self.injector.features(batch)
        if self.tape is not None:
            self.tape.features(batch)
        return batch

    def _seen_outcomes(self, batch: OutcomeBatch) -> OutcomeBatch:
        if self.injector is not None:
            batch = self.injector.outcomes(batch)
        if self.tape is not None:
            self.tape.outcomes(batch)
        return batch

    def step(self, step: Step) -> list[Alert]:
        results: list[ProfileResult] = []
        if step.features:
            known = [self._seen(b) for b in step.features if b.model_id in self.setups]
            results.append(self.profilers[0].observe_batches(known))
        if step.outcomes and self.outcome_profilers:
            known = [self._seen_outcomes(b) for b in step.outcomes if b.model_id in self.setups]
            results.append(self.outcome_profilers[0].observe_batches(known))
        for partition, records, next_offset in step.records:
            results.append(self.profilers[partition].observe(records, next_offset))
        for partition, records, next_offset in step.outcome_records:
            records = self._outcome_records(records)
            results.append(self.outcome_profilers[partition].observe(records, next_offset))
        reports = [r for result in results for r in result.reports]
        self.unknown_models += sum(len(r.unknown) for r in results)
        self.late += sum(r.late for r in results)
        if self.sync:
            reports += self._finish_all(step.watermark)
        return self._merge(reports)

    def _outcome_records(self, records: list[dict]) -> list[dict]:
        """Outcome records after injection, as the tape keeps them (label flips rewrite)."""
        by_model: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            if record["model_id"] in self.setups:
                by_model.setdefault(str(record["model_id"]), []).append(i)
        out = list(records)
        for rows in by_model.values():
            picked = [records[i] for i in rows]
            batch = OutcomeBatch.from_records([_outcome_label(dict(r)) for r in picked])
            flipped = self._seen_outcomes(batch)
            if flipped is batch:
                continue
            for i, record, label in zip(rows, picked, flipped.label.tolist(), strict=True):
                key = "value" if record.get("label") is None else "label"
                out[i] = {**record, key: label}
        return out

    def _finish_all(self, watermark: int) -> list[PartialReport]:
        profilers = [*self.profilers.values(), *self.outcome_profilers.values()]
        return [r for p in profilers for r in p.finish(watermark)]

    def _merge(self, reports: Sequence[PartialReport]) -> list[Alert]:
        alerts: list[Alert] = []
        for report in reports:
            alerts += self.mergers[report.model_id].observe(report).alerts
        return alerts

    def finish(self, watermark: int) -> list[Alert]:
        """End of the data: close every pane whose end + lateness is at or before `watermark`."""
        return self._merge(self._finish_all(watermark))


class Tape:
    """What the replay fed the engine (after injection), for scoring and the report."""

    def __init__(self) -> None:
        self.feature_parts: dict[str, list[FeatureBatch]] = {}
        self.outcome_parts: dict[str, list[OutcomeBatch]] = {}

    def features(self, batch: FeatureBatch) -> None:
        self.feature_parts.setdefault(batch.model_id, []).append(batch)

    def outcomes(self, batch: OutcomeBatch) -> None:
        self.outcome_parts.setdefault(batch.model_id, []).append(batch)

    @property
    def events(self) -> int:
        parts = itertools.chain(*self.feature_parts.values(), *self.outcome_parts.values())
        return sum(map(len, parts))

    def event_times(self) -> dict[str, np.ndarray]:
        return {
            m: np.sort(np.concatenate([b.event_time for b in parts]), kind="stable")
            for m, parts in self.feature_parts.items()
        }


# --------------------------------------------------------------------------- sources


@dataclass
class TopicSource:
    """A topic range and how to decode it; `steps()` can be read again (re-reads Kafka)."""

    replay: TopicRange
    decode_features: Callable[[list[bytes | None], PartitionRange, list[int]], list[dict]]
    decode_outcomes: Callable[[list[bytes | None], PartitionRange, list[int]], list[dict]] | None
    decode_errors: int = 0

    def steps(self, on_messages: Callable[[int], None] | None = None) -> Iterator[Step]:
        return topic_steps(self.replay, self.decode_features, self.decode_outcomes, on_messages)


def codec_decoder(codec: Any, source: TopicSource | None = None) -> Callable[..., list[dict]]:
    """Decode with a serde `Codec`; bad messages are logged, counted and skipped."""

    def decode(
        values: list[bytes | None], prange: PartitionRange, offsets: list[int]
    ) -> list[dict]:
        records, errors = codec.decode_many(
            values, topic=prange.topic, partition=prange.partition, offsets=offsets
        )
        if errors:
            log.warning("%s[%d]: %d undecodable messages skipped, first: %s",
                        prange.topic, prange.partition, len(errors), errors[0])  # fmt: skip
            if source is not None:
                source.decode_errors += len(errors)
            bad = {e.index for e in errors}
            good = [o for i, o in enumerate(offsets) if i not in bad]
            for record, offset in zip(records, good, strict=True):
                record["_offset"] = offset
        return records

    return decode


# --------------------------------------------------------------------------- running


def build_setups(
    engine: EngineConfig,
    first_events: Callable[[str, int], FeatureBatch | None],
    base_dir: str | Path = ".",
) -> dict[str, ModelSetup]:
    """Reference per model: from its file (like the worker), or its first N replayed events."""
    setups = {}
    for cfg in engine.models:
        ref_cfg = cfg.reference
        if ref_cfg.source == "file":
            path = Path(str(ref_cfg.path))
            beside = Path(base_dir) / path
            if not path.is_absolute() and (beside.exists() or not path.exists()):
                path = beside  # relative to the config file first, like the backtest paths
            reference = ReferenceProfile.from_file(path, cfg)
        elif ref_cfg.source == "profile":  # built by `driftwire reference build --out`
            path = Path(str(ref_cfg.path))
            beside = Path(base_dir) / path
            if not path.is_absolute() and (beside.exists() or not path.exists()):
                path = beside
            reference = ReferenceProfile.from_bytes(path.read_bytes())
        elif ref_cfg.source == "first_n":
            head = first_events(cfg.id, ref_cfg.first_n)
            if head is None or len(head) == 0:
                log.warning("model %s: no events in the replay, not monitored", cfg.id)
                continue
            reference = ReferenceProfile.from_batch(head, cfg)
        else:
            raise ValueError(f"model {cfg.id}: reference.source {ref_cfg.source!r} is not "
                             "supported in backtests; use file, profile or first_n")  # fmt: skip
        setups[cfg.id] = ModelSetup(cfg, reference)
    return setups


def with_reference_changes(
    setups: Mapping[str, ModelSetup], changes: Sequence[tuple[int, str]]
) -> dict[str, ModelSetup]:
    """Attach each profile file (built by `reference build --out`) to its model's setup."""
    out = dict(setups)
    for effective_from, path in changes:
        reference = ReferenceProfile.from_bytes(Path(path).read_bytes())
        setup = out.get(reference.model_id)
        if setup is None:
            raise ValueError(f"{path}: a profile of model {reference.model_id!r}, not backtested")
        if setup.versioned:
            raise ValueError(f"model {reference.model_id}: versioned models keep one reference")
        same_columns(setup.reference, reference)
        changed = (*setup.changes, (effective_from, reference))
        out[reference.model_id] = dataclasses.replace(setup, changes=changed)
    return out


def run_replay(
    setups: Mapping[str, ModelSetup],
    steps: Iterable[Step],
    partitions: Sequence[int],
    outcome_partitions: Sequence[int] = (),
    injector: Injector | None = None,
    flush_to: int | None = None,
    on_step: Callable[[Step], None] | None = None,
    sync: bool = False,
) -> tuple[list[Alert], EnginePath, Tape, int]:
    """Feed the steps through the engine path; (alerts, path, tape, last watermark)."""
    tape = Tape()
    path = EnginePath(setups, partitions, outcome_partitions, injector, tape, sync)
    alerts: list[Alert] = []
    watermark = NO_TIME
    for step in steps:
        alerts += path.step(step)
        watermark = max(watermark, step.watermark)
        if on_step is not None:
            on_step(step)
    if flush_to is not None:
        alerts += path.finish(flush_to)
    return alerts, path, tape, watermark


def closed_windows(tape: Tape, setups: Mapping[str, ModelSetup], watermark: int) -> list[Window]:
    """Windows of each model that held events and were closed by `watermark`."""
    windows = []
    for model, parts in tape.feature_parts.items():
        if model not in setups:
            continue
        win = setups[model].config.window
        hop, size = int(win.hop or win.size), win.size
        times = np.concatenate([b.event_time for b in parts])
        panes, counts = np.unique(times // hop * hop, return_counts=True)
        per_window: dict[int, int] = {}
        for j in range(size // hop):
            for start, n in zip((panes - j * hop).tolist(), counts.tolist(), strict=True):
                per_window[start] = per_window.get(start, 0) + n
        windows += [
            Window(model, s, s + size, n)
            for s, n in sorted(per_window.items())
            if s + size + win.allowed_lateness <= watermark
        ]
    return windows


def verdict_series(verdicts: Mapping[str, Sequence[Verdict]]) -> list[VerdictSeries]:
    """Group recorded verdicts into one series per (model, kind, detector, feature, segment)."""
    series: dict[tuple[Any, ...], VerdictSeries] = {}
    for model, v in ((m, v) for m, vs in verdicts.items() for v in vs):
        key = (model, *v.key, v.statistic)
        s = series.get(key)
        if s is None:
            s = series[key] = VerdictSeries(
                model, v.kind.value, v.detector, v.statistic, v.feature, v.segment
            )
        s.window_end.append(v.window_end)
        s.value.append(float(v.value))
        s.threshold.append(float(v.threshold))
        s.breached.append(bool(v.breached))
        s.p_value.append(v.p_value)
    return [series[k] for k in sorted(series, key=lambda k: tuple(str(x) for x in k))]


def performance_series(
    features: FeatureBatch, outcomes: OutcomeBatch, window_ms: int
) -> PerformanceSeries | None:
    """Per window of prediction time: error rate (classes) or MAE (scores), and coverage."""
    if not len(features) or not len(outcomes):
        return None
    truth = pa.table(
        {"pid": pa.array(outcomes.prediction_id.astype(str)), "row": np.arange(len(outcomes))}
    )
    last = truth.group_by("pid").aggregate([("row", "max")])
    preds = pa.table({"pid": pa.array(features.prediction_id.astype(str)),
                      "prow": np.arange(len(features))})  # fmt: skip
    joined = preds.join(last, "pid", join_type="left outer")
    prow = joined.column("prow").to_numpy()
    orow = joined.column("row_max").to_numpy(zero_copy_only=False)
    has = ~np.isnan(orow.astype(float))
    starts = features.event_time[prow] // window_ms * window_ms
    window_ids, inverse = np.unique(starts, return_inverse=True)
    count = np.bincount(inverse, minlength=len(window_ids))
    labelled = np.bincount(inverse, weights=has, minlength=len(window_ids))
    lab_rows, o_rows = prow[has], orow[has].astype(np.int64)
    y = outcomes.label[o_rows]
    if features.label is not None and y.dtype == object:
        metric, err = (
            "error_rate",
            (features.label[lab_rows].astype(str) != y.astype(str)).astype(float),
        )
    elif features.score is not None:
        metric, err = "mae", np.abs(features.score[lab_rows] - y.astype(float))
    else:
        return None
    ok = np.isfinite(err)
    sums = np.bincount(inverse[has][ok], weights=err[ok], minlength=len(window_ids))
    n_err = np.bincount(inverse[has][ok], minlength=len(window_ids))
    value = [float(s / n) if n else None for s, n in zip(sums, n_err, strict=True)]
    return PerformanceSeries(
        model=features.model_id,
        metric=metric,
        window_start=window_ids.tolist(),
        value=value,
        coverage=(labelled / np.maximum(count, 1)).tolist(),
        count=count.tolist(),
    )


def _known(watermark: int) -> int | None:
    return watermark if watermark > NO_TIME else None


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]replay[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


@dataclass
class Backtest:
    """One configured backtest: engine config, spec, and the data source."""

    engine: EngineConfig
    spec: BacktestSpec
    source: FileSource | TopicSource
    base_dir: Path = Path(".")
    partitions: tuple[int, ...] = (0,)
    outcome_partitions: tuple[int, ...] | None = None  # None: (0,) if the files have outcomes
    flush_to: int | None = None
    name: str = "backtest"

    @property
    def _outcome_partitions(self) -> tuple[int, ...]:
        if self.outcome_partitions is not None:
            return self.outcome_partitions
        files = isinstance(self.source, FileSource) and self.source.outcomes
        return (0,) if files else ()

    def _steps(self, progress: Progress | None) -> tuple[Iterable[Step], Callable[[Step], None]]:
        task = progress.add_task("replay", total=None, rate="-") if progress else None
        started = time.perf_counter()
        seen = 0
        if isinstance(self.source, FileSource):
            total: int | None = self.source.events
        else:  # messages in the planned offset ranges
            total = self.source.replay.events or None

        def on_step(step: Step) -> None:
            nonlocal seen
            seen += step.events
            if progress is not None and task is not None:
                rate = seen / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=seen, total=total, rate=f"{rate:,.0f}")

        if isinstance(self.source, FileSource):
            return self.source.steps(self.spec.chunk_rows), on_step
        return self.source.steps(), on_step

    def first_events(
        self, steps: Sequence[Step] | None
    ) -> Callable[[str, int], FeatureBatch | None]:
        def first(model: str, n: int) -> FeatureBatch | None:
            if isinstance(self.source, FileSource):
                batch = self.source.features.get(model)
                return None if batch is None else batch.take(slice(0, n))  # type: ignore[arg-type]
            records = [r for s in steps or [] for _, recs, _ in s.records for r in recs
                       if r["model_id"] == model][:n]  # fmt: skip
            return FeatureBatch.from_records(records) if records else None

        return first

    def run_once(
        self, engine: EngineConfig, progress: bool = False, cached: Sequence[Step] | None = None
    ) -> tuple[BacktestResult, Injector]:
        setups = build_setups(engine, self.first_events(cached), self.base_dir)
        setups = with_reference_changes(setups, self.spec.reference_changes)
        injector = Injector(self.spec.injections) if self.spec.injections else None
        with _progress(progress) as bar:
            steps, on_step = self._steps(bar if progress else None)
            if cached is not None:
                steps = cached
            started = time.perf_counter()
            alerts, path, tape, watermark = run_replay(
                setups, steps, self.partitions, self._outcome_partitions, injector,
                self.flush_to, on_step, sync=isinstance(self.source, FileSource),
            )  # fmt: skip
            seconds = time.perf_counter() - started
        final = max(watermark, self.flush_to or NO_TIME)
        result = BacktestResult(
            source=self.name,
            models=sorted(setups),
            start_ms=self.spec.start_ms,
            end_ms=self.spec.end_ms if self.spec.end_ms is not None else _known(watermark),
            events=tape.events,
            seconds=seconds,
            alerts=alerts,
            windows=closed_windows(tape, setups, final),
            series=verdict_series(path.verdicts),
            performance=self._performance(tape, setups),
            event_times=tape.event_times(),
        )
        if result.start_ms is None and result.windows:
            result.start_ms = min(w.start for w in result.windows)
        return result, injector or Injector([])

    @staticmethod
    def _performance(tape: Tape, setups: Mapping[str, ModelSetup]) -> list[PerformanceSeries]:
        out = []
        for model, parts in sorted(tape.feature_parts.items()):
            outcomes = tape.outcome_parts.get(model)
            if not outcomes or model not in setups:
                continue
            perf = performance_series(
                concat_features(parts), concat_outcomes(outcomes), setups[model].config.window.size
            )
            if perf is not None:
                out.append(perf)
        return out

    def run(self, progress: bool = False) -> BacktestResult:
        """Replay, score against the truth and the injections, and sweep if asked."""
        cached: list[Step] | None = None
        if isinstance(self.source, TopicSource) and (self.spec.sweep or self._needs_first_n()):
            cached = list(self.source.steps())  # read Kafka once, replay from memory
        result, injector = self.run_once(self.engine, progress, cached)
        truth = load_truth(self.spec.truth) if self.spec.truth else []
        truth = sorted(truth + injector.truth(), key=lambda c: (c.at, c.model))
        result.truth = truth
        if truth:
            result.card = score_with_baselines(
                result.alerts, truth, result.windows, result.event_times,
                max_delay_ms=self.spec.max_delay_ms,
            )  # fmt: skip
        for label, settings in sweep_grid(self.spec.sweep):
            engine = apply_settings(self.engine, settings)
            run, _ = self.run_once(engine, False, cached)
            score = score_alerts(run.alerts, truth, run.windows, run.event_times,
                                 name=label, max_delay_ms=self.spec.max_delay_ms)  # fmt: skip
            result.sweep.append(SweepRow(label, score, len(run.alerts)))
        return result

    def _needs_first_n(self) -> bool:
        return any(m.reference.source == "first_n" for m in self.engine.models)


# --------------------------------------------------------------------------- from a config file


def load_backtest(
    config_path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    bootstrap: str | None = None,
) -> Backtest:
    """A ready-to-run backtest from the config file's sections (+ CLI `overrides`)."""
    from driftwire.detectors.config import load_config

    path = Path(config_path)
    raw = yaml.safe_load(path.read_text()) or {}
    section = {**(raw.get("backtest") or {}), **(overrides or {})}
    spec = BacktestSpec.from_mapping(section, path.parent)
    engine = load_config(path)
    if spec.source == "files":
        source = FileSource.from_paths(spec.features, spec.outcomes, spec.format, spec.model_id)
        return Backtest(engine, spec, source, path.parent, name=", ".join(spec.features))
    topic_source = _topic_source(raw, spec, env, bootstrap)
    replay = topic_source.replay
    partitions = tuple(replay.feature_partitions()) or (0,)
    outcome_partitions = tuple(replay.outcome_partitions())
    return Backtest(engine, spec, topic_source, path.parent, partitions, outcome_partitions,
                    spec.end_ms, replay.features_topic)  # fmt: skip


def _topic_source(
    raw: Mapping[str, Any],
    spec: BacktestSpec,
    env: Mapping[str, str] | None,
    bootstrap: str | None,
) -> TopicSource:
    from driftwire.schemas.serde import Codec
    from driftwire.streams.config import StreamsConfig

    streams = StreamsConfig.from_dict(raw, env=env)
    kafka = streams.kafka
    if bootstrap:
        kafka = dataclasses.replace(kafka, bootstrap_servers=bootstrap)
    config = kafka.confluent_config()
    registry = None
    if streams.worker.schema_registry_url:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        registry = SchemaRegistryClient({"url": streams.worker.schema_registry_url})

    def codec(schema: str, topic: Any) -> Codec:
        if topic.format == "confluent":
            return Codec(schema, "confluent", registry=registry, subject=f"{topic.name}-value")
        return Codec(schema, topic.format)

    topics = streams.topics
    replay = TopicRange(
        config,
        topics.features.name,
        topics.outcomes.name if topics.outcomes else None,
        spec.start_ms,
        spec.end_ms,
    )
    source = TopicSource(replay, lambda *a: [], None)
    source.decode_features = codec_decoder(codec("FeatureEvent", topics.features), source)
    if topics.outcomes is not None:
        source.decode_outcomes = codec_decoder(codec("OutcomeEvent", topics.outcomes), source)
    replay.plan()
    return source


def _outcome_label(record: dict) -> dict:
    """OutcomeEvent carries `label` (class) or `value` (number); the batch has one label."""
    if record.get("label") is None:
        record["label"] = record.get("value")
    return record


def publish_alerts(
    alerts: Sequence[Alert],
    topic: str,
    kafka_config: Mapping[str, Any],
    fmt: str = "avro",
    timeout: float = 30.0,
) -> int:
    """Send replayed alerts to `topic` (keyed by model id, like the worker); returns the count."""
    from confluent_kafka import Producer
    from driftwire.schemas.records import alert_to_record
    from driftwire.schemas.serde import Codec

    codec = Codec("DriftAlert", fmt)  # type: ignore[arg-type]
    producer = Producer({**kafka_config, "linger.ms": 5})
    for alert in alerts:
        producer.produce(
            topic, value=codec.encode(alert_to_record(alert)), key=alert.model_id.encode()
        )
        producer.poll(0)
    left = producer.flush(timeout)
    if left:
        raise RuntimeError(f"{left} alerts not delivered to {topic} within {timeout:.0f}s")
    return len(alerts)
