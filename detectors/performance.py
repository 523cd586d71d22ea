"""Windowed model performance from joined records, label coverage, and the test vs reference.

Per event-time window *of the predictions* this keeps mergeable sums: predictions
seen, labelled, censored, and for each metric the count, sum and sum of squares of
its per-record value (error bit, log loss, Brier, absolute and squared error), plus
the binary confusion counts for precision / recall / F1 of ``positive_class``.

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
from driftwire.detectors.join import JoinCounts, JoinedBatch

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
        self.total_sq += float(np.dot(values, values))

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
    """Everything known about one prediction window's labels so far."""

    start: int
    end: int
    predictions: int = 0
    labelled: int = 0
    censored: int = 0
    evicted: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    metrics: dict[str, Moments] = field(default_factory=dict)
    provisional_done: bool = False

    @property
    def coverage(self) -> float:
        return self.labelled / self.predictions if self.predictions else math.nan

    def summary(self) -> dict[str, float]:
        out = {
            "predictions": float(self.predictions),
            "labelled": float(self.labelled),
            "censored": float(self.censored),
            "coverage": self.coverage,
        }
        out.update({name: m.mean for name, m in self.metrics.items() if m.n})
        if "error_rate" in out:
            out["accuracy"] = 1.0 - out["error_rate"]
        if "mse" in out:
            out["rmse"] = math.sqrt(out["mse"])
        if self.tp + self.fp + self.fn:
            precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
            recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out.update(precision=precision, recall=recall, f1=f1)
        return out


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
        if not keep.all():
            joined, starts = joined.take(keep), starts[keep]
        values = record_metrics(joined, self.config)
        uniq, inverse = np.unique(starts, return_inverse=True)
        labelled = np.bincount(inverse, minlength=len(uniq))
        sums = {k: _group_moments(v, inverse, len(uniq)) for k, v in values.items()}
        confusion = self._confusion(joined, inverse, len(uniq))
        for g, start in enumerate(uniq.tolist()):
            win = self._window(start)
            win.labelled += int(labelled[g])
            for name, (n, total, total_sq) in sums.items():
                win.metrics.setdefault(name, Moments()).merge(
                    Moments(int(n[g]), float(total[g]), float(total_sq[g]))
                )
            if confusion is not None:
                win.tp += int(confusion[0][g])
                win.fp += int(confusion[1][g])
                win.fn += int(confusion[2][g])

    def _confusion(
        self, joined: JoinedBatch, inverse: np.ndarray, groups: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if self.config.task != "binary":
            return None
        pos = self.config.positive_class
        pred, true = joined.predicted == pos, joined.actual == pos
        return tuple(  # type: ignore[return-value]
            np.bincount(inverse, weights=m.astype(float), minlength=groups)
            for m in (pred & true, pred & ~true, ~pred & true)
        )

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
        del self.windows_[win.start]
        self.final_until_ = win.end
        summary = win.summary()
        summary["window_start"] = float(win.start)
        self.history_.append(summary)
        if self.reference_ is None:
            self._pool_reference(win)
            return []
        return self._test(win, provisional=False)

    def _pool_reference(self, win: WindowPerformance) -> None:
        if win.labelled < self.config.min_labels:
            return
        for name, m in win.metrics.items():
            self._pool.setdefault(name, Moments()).merge(m)
        self._pooled_windows += 1
        if self._pooled_windows >= self.config.reference_windows:
            self.reference_, self._pool = self._pool, {}

    def _test(self, win: WindowPerformance, provisional: bool) -> list[Verdict]:
        if self.reference_ is None or win.labelled < self.config.min_labels:
            return []
        out = []
        summary = win.summary()
        for name in self.tested:
            ref, cur = self.reference_.get(name), win.metrics.get(name)
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


def _group_moments(
    values: np.ndarray, inverse: np.ndarray, groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ok = ~np.isnan(values)
    v = np.where(ok, values, 0.0)
    return (
        np.bincount(inverse, weights=ok.astype(float), minlength=groups),
        np.bincount(inverse, weights=v, minlength=groups),
        np.bincount(inverse, weights=v * v, minlength=groups),
    )
