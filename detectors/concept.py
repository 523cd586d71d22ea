"""Concept drift with delayed labels: join, then sequential detectors and windowed performance.

A :class:`ConceptTracker` is one model's concept-drift state: a
:class:`~driftwire.detectors.join.Joiner` (the pending store) plus the detection
half. The halves are usable apart: a join stage can run ``Joiner`` alone and ship
its :class:`~driftwire.detectors.join.JoinedBatch` es to a detection stage that
calls :meth:`ConceptTracker.observe_joined` (its own joiner then stays empty).

Determinism under label delay. Labels arrive in any order, but the sequence fed to
the River detectors must not depend on it. So joined records are *not* fed as they
join. They wait, grouped by their prediction's event-time window, until the
watermark passes the window's end by ``label_horizon_ms`` (the expected maximum
label delay, which may be shorter than the TTL). The window is then *released*: its
records are sorted by (prediction event time, prediction id) and fed to every
sequential detector, and each detector gives one verdict for the window (drift ->
``critical``, warning -> ``warning``, under the key ``<detector>.warning``). A label
that joins after its window was released is a **late label**: counted, used for
windowed performance, never fed to the sequential detectors. With every label
arriving within the horizon, the detector input - hence every alert - is identical
whatever the arrival order and batching of the labels.

Windowed performance (accuracy / error rate, precision / recall / F1, log loss,
Brier, MAE / RMSE) and label coverage are in :mod:`driftwire.detectors.performance`;
a window is provisional until its coverage reaches ``coverage_threshold`` or its
TTL expires, then final, and its alerts say which (``Alert.provisional``).

After a drift each sequential detector restarts from scratch, so it learns the new
error rate; the alert lifecycle resolves the alert after ``resolve_after`` clean
windows.

>>> import numpy as np
>>> from driftwire.detectors.alerts import AlertPolicy
>>> from driftwire.detectors.label_generators import error_rate_stream, replay
>>> stream = error_rate_stream(60_000, change_at=30_000, before=0.1, after=0.3,
...                            max_delay=2_000, seed=1)
>>> tracker = ConceptTracker(ConceptConfig(label_horizon_ms=2_000 * stream.ms_per_event),
...                          "fraud", window_ms=5_000 * stream.ms_per_event,
...                          policy=AlertPolicy(), reference_id="ref-1")
>>> alerts = replay(stream, tracker)
>>> sorted({(a.detector, a.status.value) for a in alerts if a.window_start < 30_000})
[]
>>> first = min(alerts, key=lambda a: a.window_start)
>>> first.status.value, first.severity.value, first.window_start // stream.ms_per_event
('firing', 'critical', 30000)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
from driftwire.detectors.alerts import (
    Alert,
    AlertKind,
    AlertLifecycle,
    AlertPolicy,
    Evidence,
    Severity,
    Verdict,
)
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.join import JoinCounts, JoinedBatch, Joiner, canonical_order
from driftwire.detectors.performance import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    Moments,
    PerformanceTracker,
)
from driftwire.detectors.sequential import (
    BINARY_ONLY,
    DEFAULT_CLASSIFICATION,
    DEFAULT_PARAMS,
    DEFAULT_REGRESSION,
    Change,
    SequentialDetector,
)

log = logging.getLogger(__name__)

_DAY_MS = 86_400_000


@dataclass(frozen=True)
class ConceptConfig:
    """Concept-drift settings of one model. Plain types, so the engine's loader validates them."""

    task: Literal["binary", "multiclass", "regression"] = "binary"
    positive_class: str = "1"  # binary: the class precision / recall / F1 are about
    decision_threshold: float = 0.5  # binary: score >= this means positive, when no label
    loss: Literal["absolute", "squared"] = "absolute"  # regression loss fed to detectors
    detectors: tuple[str, ...] = ()  # sequential detectors; () = the calibrated default set
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # River overrides
    label_ttl_ms: int = 7 * _DAY_MS  # after window end: unlabelled predictions are censored
    label_horizon_ms: int = 3_600_000  # expected max label delay (capped at the TTL): release
    orphan_grace_ms: int = 300_000  # how long an outcome waits for its prediction
    coverage_threshold: float = 0.9  # label coverage that makes a window's performance final
    max_pending: int = 2_000_000  # waiting predictions (and waiting outcomes) held in memory
    metrics: tuple[str, ...] = ()  # tested performance metrics; () = error_rate / mae / mse
    confidence: float = 0.999  # one-sided confidence of the performance test
    min_degradation: float = 0.05  # relative worsening below which no performance alert
    min_labels: int = 200  # labelled records a window needs to be tested
    reference_windows: int = 3  # final windows pooled as reference when none is given

    def __post_init__(self) -> None:
        object.__setattr__(self, "detectors", tuple(self.detectors))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        if self.task not in ("binary", "multiclass", "regression"):
            raise ValueError(f"unknown task {self.task!r}")
        if self.loss not in ("absolute", "squared"):
            raise ValueError(f"unknown loss {self.loss!r}")
        for name in self.detector_names():
            if name not in DEFAULT_PARAMS:
                raise ValueError(f"unknown sequential detector {name!r}")
            if self.task == "regression" and name in BINARY_ONLY:
                raise ValueError(
                    f"{name} needs error bits; regression supports adwin, page_hinkley"
                )
        allowed = REGRESSION_METRICS if self.task == "regression" else CLASSIFICATION_METRICS
        for name in self.tested_metrics():
            if name not in allowed:
                raise ValueError(f"metric {name!r} not available for {self.task}: {allowed}")
        if self.task == "multiclass" and {"log_loss", "brier"} & set(self.metrics):
            raise ValueError("log_loss / brier need binary scores")
        if not 0 < self.coverage_threshold <= 1 or not 0.5 < self.confidence < 1:
            raise ValueError("coverage_threshold must be in (0, 1], confidence in (0.5, 1)")
        if min(self.label_ttl_ms, self.label_horizon_ms, self.orphan_grace_ms) < 0:
            raise ValueError("label_ttl_ms, label_horizon_ms and orphan_grace_ms must be >= 0")
        if self.max_pending < 1 or self.min_labels < 2 or self.reference_windows < 1:
            raise ValueError("max_pending >= 1, min_labels >= 2, reference_windows >= 1")

    def detector_names(self) -> tuple[str, ...]:
        if self.detectors:
            return self.detectors
        return DEFAULT_REGRESSION if self.task == "regression" else DEFAULT_CLASSIFICATION

    def tested_metrics(self) -> tuple[str, ...]:
        if self.metrics:
            return self.metrics
        if self.task == "regression":
            return ("mae",) if self.loss == "absolute" else ("mse",)
        return ("error_rate",)


@dataclass(slots=True)
class ConceptStats:
    """Running totals, so nothing the join drops goes unreported."""

    predictions: int = 0
    joined: int = 0
    censored: int = 0  # predictions whose label never came (TTL or memory bound)
    evicted: int = 0  # of which expired early by the memory bound
    orphans: int = 0  # outcomes that never found their prediction
    duplicates: int = 0  # repeated prediction ids
    late_labels: int = 0  # joined after their window was released: not fed to detectors
    fed: int = 0  # records fed to the sequential detectors
    pending_predictions: int = 0
    pending_outcomes: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ConceptTracker:
    """One model's concept-drift tracker: join + sequential detectors + windowed performance.

    Picklable: the monitor pickles it whole for ``snapshot()`` / ``restore()``.
    """

    def __init__(
        self,
        config: ConceptConfig,
        model_id: str,
        window_ms: int,
        policy: AlertPolicy,
        reference_id: str,
    ) -> None:
        self.config = config
        self.model_id = model_id
        self.window_ms = window_ms
        self.horizon_ms = min(config.label_horizon_ms, config.label_ttl_ms)
        self.joiner = Joiner(config, window_ms)
        self.performance = PerformanceTracker(config, window_ms)
        binary = config.task != "regression"
        self.detectors = {
            name: SequentialDetector(name, config.detector_params.get(name), binary=binary)
            for name in config.detector_names()
        }
        self.lifecycle = AlertLifecycle(policy, model_id, reference_id)
        self.stats_ = ConceptStats()
        self.buffer_: dict[int, list[JoinedBatch]] = {}  # window start -> joined, unreleased
        self.release_cutoff_ = int(np.iinfo(np.int64).min)
        self.watermark_ = int(np.iinfo(np.int64).min)

    # -- input ---------------------------------------------------------------------

    def observe_predictions(self, batch: FeatureBatch) -> None:
        self.observe_joined(self.joiner.observe_predictions(batch))

    def observe_outcomes(self, batch: OutcomeBatch) -> None:
        self.observe_joined(self.joiner.observe_outcomes(batch))

    def observe_joined(self, joined: JoinedBatch) -> None:
        """Detection half: joined records and join counts, from this or another joiner."""
        self._count(joined.counts)
        self.performance.add_counts(joined.counts)
        if len(joined) == 0:
            return
        self.stats_.joined += len(joined)
        self.performance.add_joined(joined)
        starts = joined.event_time - joined.event_time % self.window_ms
        late = starts + self.window_ms <= self.release_cutoff_
        if late.any():
            self.stats_.late_labels += int(late.sum())
            joined, starts = joined.take(~late), starts[~late]
        uniq, inverse = np.unique(starts, return_inverse=True)
        for g, start in enumerate(uniq.tolist()):
            part = joined if len(uniq) == 1 else joined.take(inverse == g)
            self.buffer_.setdefault(start, []).append(part)

    def set_reference(self, reference: dict[str, Moments]) -> None:
        """Reference performance per metric (e.g. computed from the reference data)."""
        self.performance.set_reference(reference)

    def stats(self) -> ConceptStats:
        self.stats_.pending_predictions = self.joiner.pending_predictions
        self.stats_.pending_outcomes = self.joiner.pending_outcomes
        return self.stats_

    # -- time ----------------------------------------------------------------------

    def advance(self, watermark_ms: int) -> list[Alert]:
        """Expire, release and test everything the event-time watermark makes due."""
        self.observe_joined(self.joiner.advance(watermark_ms))
        self.watermark_ = max(self.watermark_, int(watermark_ms))
        self.release_cutoff_ = max(self.release_cutoff_, self.watermark_ - self.horizon_ms)
        verdicts = self._release()
        verdicts += self.performance.verdicts(self.release_cutoff_, self.watermark_)
        return [alert for v in verdicts for alert in self.lifecycle.observe(v)]

    def _count(self, counts: JoinCounts) -> None:
        s = self.stats_
        s.predictions += sum(counts.predictions.values())
        s.censored += sum(counts.censored.values())
        s.evicted += sum(counts.evicted.values())
        s.orphans += counts.orphans
        s.duplicates += counts.duplicates

    def _release(self) -> list[Verdict]:
        due = sorted(w for w in self.buffer_ if w + self.window_ms <= self.release_cutoff_)
        verdicts: list[Verdict] = []
        for start in due:
            parts = self.buffer_.pop(start)
            times = np.concatenate([p.event_time for p in parts])
            pids = np.concatenate([p.prediction_id for p in parts])
            losses = np.concatenate([p.loss for p in parts])
            order = canonical_order(times, pids)
            losses, times = losses[order], times[order]
            for name, det in self.detectors.items():
                changes = det.update(losses)
                verdicts.extend(self._verdicts(name, det, start, losses, times, changes))
            self.stats_.fed += len(losses)
        return verdicts

    def _verdicts(
        self,
        name: str,
        det: SequentialDetector,
        start: int,
        losses: np.ndarray,
        times: np.ndarray,
        changes: list[Change],
    ) -> list[Verdict]:
        out = [self._verdict(name, "drift", start, losses, times, changes)]
        if hasattr(det.detector_, "warning_detected") and name != "eddm":
            out.append(self._verdict(name, "warning", start, losses, times, changes))
        return out

    def _verdict(
        self,
        name: str,
        level: str,
        start: int,
        losses: np.ndarray,
        times: np.ndarray,
        changes: list[Change],
    ) -> Verdict:
        hits = [c for c in changes if c.severity == level]
        current = {"mean_loss": float(losses.mean()), "labelled": float(len(losses))}
        reference: dict[str, float] = {}
        if hits:
            first = hits[0]
            position = self.stats_.fed + first.index  # labelled records fed before it
            current.update(detected_at=float(times[first.index]), position=float(position))
            reference["mean_loss_before"] = first.mean_before
        is_drift = level == "drift"
        return Verdict(
            kind=AlertKind.CONCEPT_DRIFT,
            detector=name if is_drift else f"{name}.warning",
            statistic="drifts" if is_drift else "warnings",
            value=float(len(hits)),
            threshold=0.0,
            breached=bool(hits),
            window_start=start,
            window_end=start + self.window_ms,
            window_count=len(losses),
            severity=Severity.CRITICAL if is_drift else Severity.WARNING,
            evidence=Evidence(
                reference=reference,
                current=current,
                notes={"input": "error bit" if self.config.task != "regression" else "loss"},
            ),
        )
