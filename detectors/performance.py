"""Windowed model performance from joined records, label coverage, and the test vs reference.

Per event-time window *of the predictions* this counts predictions seen, labelled
and censored, and keeps the joined records until the window is final; each metric
is the mean of a per-record value (error bit, log loss, Brier, absolute and squared
error), and precision / recall / F1 are for ``positive_class``.

Provisional vs final. A window is *released* once the watermark passes its end by
the label horizon. From then on:

- if its label coverage (labelled / predictions) has reached ``coverage_threshold``,
  or its label TTL has expired, its performance is **final**: tested once, in window
  order, and fed to the alert lifecycle under ``performance.<metric>``. Labels that
  arrive after that are counted (``after_final``) but do not change the verdict;
- otherwise it is tested once **provisionally** on the labels it has (if at least
  ``min_labels``), under the separate key ``performance.<metric>.provisional``, so a
  provisional alert never counts towards a final one's hysteresis.

The test. Every tested metric is a mean of per-record losses where higher is worse.
The reference is a mean with its variance and count (from reference data via
:meth:`PerformanceTracker.set_reference`, or pooled from the first
``reference_windows`` final windows). The window breaches when the one-sided
lower confidence bound of ``current - reference`` (normal approximation, Welch
standard error) exceeds ``min_degradation * |reference|``: a drop that is both
significant and large enough to matter, so big windows do not alarm on trivia.

>>> import numpy as np
>>> ref, cur = Moments(), Moments()
>>> ref.add(np.r_[np.ones(100), np.zeros(900)])   # error rate 0.10
>>> cur.add(np.r_[np.ones(200), np.zeros(800)])   # error rate 0.20
>>> c = compare(ref, cur, confidence=0.999, min_degradation=0.05)
>>> c.breached, round(c.lower, 3)
(True, 0.051)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
from driftwire.detectors.alerts import AlertKind, Evidence, Severity, Verdict
from driftwire.detectors.join import JoinCounts, JoinedBatch, canonical_order

if TYPE_CHECKING:
    from driftwire.detectors.concept import ConceptConfig

CLASSIFICATION_METRICS = ("error_rate", "log_loss", "brier")
REGRESSION_METRICS = ("mae", "mse")
_EPS = 1e-15


@dataclass(slots=True)
class Moments:
    """Count, sum and sum of squares of a per-record value; NaNs are skipped."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    def add(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        self.n += len(values)
        self.total += float(values.sum())
        self.total_sq += float(np.einsum("i,i->", values, values))  # no BLAS threads

    def merge(self, other: Moments) -> None:
        self.n += other.n
        self.total += other.total
        self.total_sq += other.total_sq

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def var(self) -> float:
        if self.n < 2:
            return math.nan
        return max(self.total_sq / self.n - self.mean**2, 0.0) * self.n / (self.n - 1)


@dataclass(frozen=True, slots=True)
class Comparison:
    reference: float
    current: float
    lower: float  # one-sided lower confidence bound of current - reference
    p_value: float  # of "current is no worse than reference"
    margin: float  # the degradation that counts: min_degradation * |reference|
    breached: bool


def compare(ref: Moments, cur: Moments, confidence: float, min_degradation: float) -> Comparison:
    """One-sided test that the current mean loss is worse than the reference's."""
    diff = cur.mean - ref.mean
    se = math.sqrt(cur.var / cur.n + ref.var / ref.n)
    z = NormalDist().inv_cdf(confidence)
    margin = min_degradation * abs(ref.mean)
    if se > 0:
        lower = diff - z * se
        p_value = 1.0 - NormalDist().cdf(diff / se)
    else:
        lower, p_value = diff, (0.0 if diff > 0 else 1.0)
    return Comparison(ref.mean, cur.mean, lower, p_value, margin, lower > margin)


def record_metrics(joined: JoinedBatch, config: ConceptConfig) -> dict[str, np.ndarray]:
    """Per-record metric values (NaN where undefined, e.g. log loss with no score)."""
    if config.task == "regression":
        diff = joined.predicted - joined.actual
        return {"mae": np.abs(diff), "mse": diff * diff}
    out = {"error_rate": joined.loss}
    if config.task == "binary":
        y = (joined.actual == config.positive_class).astype(np.float64)
        p = np.clip(joined.score, _EPS, 1 - _EPS)
        out["log_loss"] = -(y * np.log(p) + (1 - y) * np.log1p(-p))
        out["brier"] = (joined.score - y) ** 2
    return out


@dataclass(slots=True)
class WindowPerformance:
    """Everything known about one prediction window's labels so far.

    The joined records are kept (not running sums) until the window is final, and
    measured sorted by (event time, prediction id): float sums then do not depend on
    label arrival order, so neither do the alerts, to the last bit.
    """

    start: int
    end: int
    predictions: int = 0
    labelled: int = 0
    censored: int = 0
    evicted: int = 0
    parts: list[JoinedBatch] = field(default_factory=list)
    provisional_done: bool = False

    @property
    def coverage(self) -> float:
        return self.labelled / self.predictions if self.predictions else math.nan

    def measure(self, config: ConceptConfig) -> tuple[dict[str, Moments], dict[str, float]]:
        """Per-metric moments and a summary (counts, coverage, every metric's value)."""
        summary = {
            "predictions": float(self.predictions),
            "labelled": float(self.labelled),
            "censored": float(self.censored),
            "coverage": self.coverage,
        }
        if not self.parts:
            return {}, summary
        joined = _sorted(self.parts)
        metrics = {}
        for name, values in record_metrics(joined, config).items():
            metrics[name] = m = Moments()
            m.add(values)
            if m.n:
                summary[name] = m.mean
        if "error_rate" in summary:
            summary["accuracy"] = 1.0 - summary["error_rate"]
        if "mse" in summary:
            summary["rmse"] = math.sqrt(summary["mse"])
        if config.task == "binary":
            summary.update(_precision_recall(joined, config.positive_class))
        return metrics, summary


def _sorted(parts: list[JoinedBatch]) -> JoinedBatch:
    cat = JoinedBatch(*(np.concatenate([getattr(p, col) for p in parts]) for col in _COLUMNS))
    return cat.take(canonical_order(cat.event_time, cat.prediction_id))


_COLUMNS = ("event_time", "prediction_id", "loss", "score", "predicted", "actual", "outcome_time")


def _precision_recall(joined: JoinedBatch, positive: str) -> dict[str, float]:
    pred, true = joined.predicted == positive, joined.actual == positive
    tp, fp, fn = int((pred & true).sum()), int((pred & ~true).sum()), int((~pred & true).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


class PerformanceTracker:
    """Per-window performance, coverage and the comparison with the reference performance."""

    def __init__(self, config: ConceptConfig, window_ms: int, history: int = 1000) -> None:
        self.config = config
        self.window_ms = window_ms
        self.tested = config.tested_metrics()
        self.windows_: dict[int, WindowPerformance] = {}
        self.reference_: dict[str, Moments] | None = None
        self._pool: dict[str, Moments] = {}
        self._pooled_windows = 0
        self.final_until_ = np.iinfo(np.int64).min  # windows starting before this are final
        self.after_final_ = 0
        self.history_: deque[dict[str, float]] = deque(maxlen=history)

    def set_reference(self, reference: dict[str, Moments]) -> None:
        """Reference performance (e.g. from reference data); replaces the first windows."""
        self.reference_ = {k: Moments(m.n, m.total, m.total_sq) for k, m in reference.items()}

    def _window(self, start: int) -> WindowPerformance:
        win = self.windows_.get(start)
        if win is None:
            win = self.windows_[start] = WindowPerformance(start, start + self.window_ms)
        return win

    def add_counts(self, counts: JoinCounts) -> None:
        for attr in ("predictions", "censored", "evicted"):
            for start, n in getattr(counts, attr).items():
                if start >= self.final_until_:
                    win = self._window(start)
                    setattr(win, attr, getattr(win, attr) + n)

    def add_joined(self, joined: JoinedBatch) -> None:
        if len(joined) == 0:
            return
        starts = joined.event_time - joined.event_time % self.window_ms
        keep = starts >= self.final_until_
        self.after_final_ += int((~keep).sum())
        uniq, inverse = np.unique(starts[keep], return_inverse=True)
        if len(uniq) == 1 and keep.all():
            groups = [joined]
        else:
            kept = joined.take(keep)
            groups = [kept.take(inverse == g) for g in range(len(uniq))]
        for start, part in zip(uniq.tolist(), groups, strict=True):
            win = self._window(start)
            win.labelled += len(part)
            win.parts.append(part)

    def verdicts(self, release_cutoff: int, watermark: int) -> list[Verdict]:
        """Provisional verdicts for newly released windows, then final ones in window order."""
        out: list[Verdict] = []
        for start in sorted(self.windows_):
            win = self.windows_[start]
            if win.end > release_cutoff:
                break
            if not win.provisional_done and not self._final(win, watermark):
                win.provisional_done = True
                out.extend(self._test(win, provisional=True))
        # final strictly in window order, so the lifecycle sees windows in sequence
        while self.windows_:
            win = self.windows_[min(self.windows_)]
            if win.end > release_cutoff or not self._final(win, watermark):
                break
            out.extend(self._finalise(win))
        return out

    def _final(self, win: WindowPerformance, watermark: int) -> bool:
        expired = win.end + self.config.label_ttl_ms <= watermark
        return expired or win.coverage >= self.config.coverage_threshold

    def _finalise(self, win: WindowPerformance) -> list[Verdict]:
        del self.windows_[win.start]  # its records go with it: memory is bounded by open windows
        self.final_until_ = win.end
        metrics, summary = win.measure(self.config)
        self.history_.append(summary | {"window_start": float(win.start)})
        if self.reference_ is None:
            self._pool_reference(win, metrics)
            return []
        return self._test(win, provisional=False, measured=(metrics, summary))

    def _pool_reference(self, win: WindowPerformance, metrics: dict[str, Moments]) -> None:
        if win.labelled < self.config.min_labels:
            return
        for name, m in metrics.items():
            self._pool.setdefault(name, Moments()).merge(m)
        self._pooled_windows += 1
        if self._pooled_windows >= self.config.reference_windows:
            self.reference_, self._pool = self._pool, {}

    def _test(
        self,
        win: WindowPerformance,
        provisional: bool,
        measured: tuple[dict[str, Moments], dict[str, float]] | None = None,
    ) -> list[Verdict]:
        if self.reference_ is None or win.labelled < self.config.min_labels:
            return []
        metrics, summary = measured or win.measure(self.config)
        out = []
        for name in self.tested:
            ref, cur = self.reference_.get(name), metrics.get(name)
            if ref is None or cur is None or cur.n < self.config.min_labels or ref.n < 2:
                continue
            c = compare(ref, cur, self.config.confidence, self.config.min_degradation)
            out.append(self._verdict(win, name, c, summary, provisional))
        return out

    def _verdict(
        self,
        win: WindowPerformance,
        name: str,
        c: Comparison,
        summary: dict[str, float],
        provisional: bool,
    ) -> Verdict:
        ref = self.reference_ or {}
        current = dict(summary)
        current.update(degradation_lower_bound=c.lower)
        return Verdict(
            kind=AlertKind.CONCEPT_DRIFT,
            detector=f"performance.{name}" + (".provisional" if provisional else ""),
            statistic=name,
            value=c.current,
            threshold=c.reference + c.margin,
            breached=c.breached,
            window_start=win.start,
            window_end=win.end,
            window_count=win.labelled,
            p_value=c.p_value,
            severity=Severity.WARNING if provisional else Severity.CRITICAL,
            evidence=Evidence(
                reference={k: m.mean for k, m in ref.items()} | {"labelled": float(ref[name].n)},
                current=current,
                notes={
                    "status": "provisional" if provisional else "final",
                    "test": f"one-sided {self.config.confidence:.4g} lower bound of "
                    f"current - reference > {self.config.min_degradation:g} x reference",
                },
            ),
            provisional=provisional,
        )
