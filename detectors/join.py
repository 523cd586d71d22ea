"""Join predictions with their late outcomes by prediction id: the pending store.

:class:`Joiner` is pure (no Kafka, no clock): it keeps predictions waiting for a
label, and outcomes waiting for a prediction that has not arrived yet, so either
arrival order joins. Each call returns a columnar :class:`JoinedBatch` of the
records joined by that call, plus the counts the detection half needs to compute
label coverage (:class:`JoinCounts`, mergeable sums so several joiners, one per
Kafka partition, can feed one detection stage).

Bounds, by event-time watermark and by memory; nothing is dropped silently:

- A prediction's label deadline is the end of its event-time window plus
  ``label_ttl_ms``. When the watermark passes it, the prediction is expired and
  counted as **censored** in its window. Expiring whole windows keeps the cost O(1)
  per prediction and makes "this window's labels are final" exact.
- An outcome with no prediction waits until the watermark passes its own event time
  plus ``orphan_grace_ms`` (its prediction cannot be later than the outcome), then is
  counted as an **orphan**. A label arriving after its prediction was censored is an
  orphan too.
- Over ``max_pending`` waiting predictions, the oldest window's are expired early
  and counted as censored *and* **evicted**; waiting outcomes likewise become orphans.
- A repeated prediction id replaces the waiting one and is counted as a **duplicate**.

The joined record yields ``loss``: the error bit (classification: 1 when the
predicted class differs from the true one; binary uses ``positive_class`` and, when
a prediction has no label, ``score >= decision_threshold``) or the absolute /
squared error (regression: prediction = score, or the label when there is no score).

>>> import numpy as np
>>> from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
>>> from driftwire.detectors.concept import ConceptConfig
>>> j = Joiner(ConceptConfig(task="binary", label_ttl_ms=1_000), window_ms=100)
>>> obj = lambda *v: np.array(v, dtype=object)
>>> out = j.observe_outcomes(OutcomeBatch("m", obj("b"), np.array([150]), obj("1")))
>>> len(out), j.pending_outcomes
(0, 1)
>>> preds = FeatureBatch("m", obj("a", "b"), np.array([10, 120]), label=obj("1", "0"))
>>> joined = j.observe_predictions(preds)
>>> joined.prediction_id.tolist(), joined.loss.tolist(), joined.counts.predictions
(['b'], [1.0], {0: 1, 100: 1})
>>> j.advance(1_100).counts.censored   # window [0, 100) + TTL has passed: "a" is censored
{0: 1}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch

if TYPE_CHECKING:
    from driftwire.detectors.concept import ConceptConfig

log = logging.getLogger(__name__)


@dataclass(slots=True)
class JoinCounts:
    """Per-window counts from the join; sums, so they merge across joiners."""

    predictions: dict[int, int] = field(default_factory=dict)  # window start -> seen
    censored: dict[int, int] = field(default_factory=dict)  # window start -> expired unlabelled
    evicted: dict[int, int] = field(default_factory=dict)  # subset of censored: memory bound
    orphans: int = 0
    duplicates: int = 0

    def merge(self, other: JoinCounts) -> None:
        for mine, theirs in (
            (self.predictions, other.predictions),
            (self.censored, other.censored),
            (self.evicted, other.evicted),
        ):
            for w, n in theirs.items():
                mine[w] = mine.get(w, 0) + n
        self.orphans += other.orphans
        self.duplicates += other.duplicates


@dataclass(slots=True)
class JoinedBatch:
    """Joined prediction/outcome records as columns, in the order they joined."""

    event_time: np.ndarray  # int64, the prediction's event time
    prediction_id: np.ndarray  # str
    loss: np.ndarray  # float64: error bit (classification) or loss (regression)
    score: np.ndarray  # float64, NaN = no score
    predicted: np.ndarray  # str class, or float64 (regression)
    actual: np.ndarray  # str class, or float64 (regression)
    outcome_time: np.ndarray  # int64
    counts: JoinCounts = field(default_factory=JoinCounts)

    def __len__(self) -> int:
        return len(self.event_time)

    @classmethod
    def empty(cls, regression: bool, counts: JoinCounts | None = None) -> JoinedBatch:
        label_dtype = np.float64 if regression else str
        return cls(
            event_time=np.empty(0, np.int64),
            prediction_id=np.empty(0, str),
            loss=np.empty(0),
            score=np.empty(0),
            predicted=np.empty(0, label_dtype),
            actual=np.empty(0, label_dtype),
            outcome_time=np.empty(0, np.int64),
            counts=counts or JoinCounts(),
        )

    def take(self, index: np.ndarray) -> JoinedBatch:
        """Rows by index or mask; counts are not carried (they are not per row)."""
        return JoinedBatch(
            self.event_time[index],
            self.prediction_id[index],
            self.loss[index],
            self.score[index],
            self.predicted[index],
            self.actual[index],
            self.outcome_time[index],
        )


def class_names(values: np.ndarray) -> np.ndarray:
    """Class labels as strings: 1, 1.0, True and "1" all become "1"; missing becomes ""."""
    if values.dtype.kind in "iub":
        return values.astype(np.int64).astype(str)
    if values.dtype.kind == "f":
        ints = np.isfinite(values) & (values == np.round(values))
        out = values.astype(str)
        out[ints] = values[ints].astype(np.int64).astype(str)
        out[np.isnan(values)] = ""
        return out
    items = values.tolist()
    if set(map(type, items)) == {str}:  # the common case, without a Python-level loop
        return np.array(items, dtype=str)
    return np.array([_class_name(v) for v in items], dtype=str)


def _class_name(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Joiner:
    """Pending store joining predictions and outcomes by prediction id (see module doc)."""

    def __init__(self, config: ConceptConfig, window_ms: int) -> None:
        if window_ms <= 0:
            raise ValueError("window_ms must be positive")
        self.config = config
        self.window_ms = window_ms
        self.regression = config.task == "regression"
        # prediction id -> (event_time, score, predicted)
        self.pending_: dict[str, tuple[int, float, Any]] = {}
        self.pending_by_window_: dict[int, list[str]] = {}
        # prediction id -> (outcome event_time, label) for outcomes that came first
        self.waiting_: dict[str, tuple[int, Any]] = {}
        self.waiting_by_window_: dict[int, list[str]] = {}
        self.watermark_ = np.iinfo(np.int64).min

    @property
    def pending_predictions(self) -> int:
        return len(self.pending_)

    @property
    def pending_outcomes(self) -> int:
        return len(self.waiting_)

    def observe_predictions(self, batch: FeatureBatch) -> JoinedBatch:
        """Store predictions; returns those whose outcome was already waiting."""
        counts = JoinCounts()
        if len(batch) == 0:
            return JoinedBatch.empty(self.regression, counts)
        times = np.asarray(batch.event_time, dtype=np.int64)
        pids = batch.prediction_id.astype(str)
        windows = times - times % self.window_ms
        uniq, inverse, per_window = np.unique(windows, return_inverse=True, return_counts=True)
        counts.predictions = dict(zip(uniq.tolist(), per_window.tolist(), strict=True))
        score = batch.score if batch.score is not None else np.full(len(batch), np.nan)
        predicted = self._predicted(batch, score)
        pid_list = pids.tolist()
        rows = zip(times.tolist(), score.tolist(), predicted.tolist(), strict=True)
        before = len(self.pending_)
        self.pending_.update(zip(pid_list, rows, strict=True))
        counts.duplicates = len(batch) - (len(self.pending_) - before)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(per_window)[:-1]
        for w, group in zip(uniq.tolist(), np.split(pids[order], bounds), strict=True):
            self.pending_by_window_.setdefault(w, []).extend(group.tolist())
        joined = self._join_waiting(pid_list) if self.waiting_ else None
        self._evict(counts)
        if joined is None:
            return JoinedBatch.empty(self.regression, counts)
        joined.counts = counts
        return joined

    def observe_outcomes(self, batch: OutcomeBatch) -> JoinedBatch:
        """Join outcomes with waiting predictions; keep the others waiting."""
        counts = JoinCounts()
        if len(batch) == 0:
            return JoinedBatch.empty(self.regression, counts)
        labels = (
            np.asarray(batch.label, dtype=np.float64)
            if self.regression
            else class_names(np.asarray(batch.label))
        )
        pids = batch.prediction_id.astype(str).tolist()
        pop = self.pending_.pop
        rows = [pop(p, None) for p in pids]
        hit = np.fromiter((r is not None for r in rows), dtype=bool, count=len(rows))
        times = np.asarray(batch.event_time, dtype=np.int64)
        if not hit.all():
            self._wait(np.flatnonzero(~hit), pids, times, labels)
        self._evict(counts)
        idx = np.flatnonzero(hit)
        if len(idx) == 0:
            return JoinedBatch.empty(self.regression, counts)
        found = [rows[i] for i in idx.tolist()]
        joined = self._build([pids[i] for i in idx.tolist()], found, times[idx], labels[idx])
        joined.counts = counts
        return joined

    def advance(self, watermark_ms: int) -> JoinedBatch:
        """Expire predictions past their label deadline and outcomes past their grace."""
        self.watermark_ = max(self.watermark_, int(watermark_ms))
        counts = JoinCounts()
        ttl_cut = self.watermark_ - self.config.label_ttl_ms - self.window_ms
        for w in sorted(w for w in self.pending_by_window_ if w <= ttl_cut):
            self._expire_predictions(w, counts, evicted=False)
        orphan_cut = self.watermark_ - self.config.orphan_grace_ms - self.window_ms
        for w in sorted(w for w in self.waiting_by_window_ if w <= orphan_cut):
            self._expire_outcomes(w, counts)
        return JoinedBatch.empty(self.regression, counts)

    # -- internals -----------------------------------------------------------------

    def _predicted(self, batch: FeatureBatch, score: np.ndarray) -> np.ndarray:
        if self.regression:
            if batch.score is not None and not np.isnan(score).all():
                return score
            return np.asarray(batch.label, dtype=np.float64)
        labels = (
            class_names(batch.label)
            if batch.label is not None
            else np.full(len(batch), "", dtype=str)
        )
        if self.config.task == "binary":
            # no predicted label: derive it from the score and the decision threshold
            missing = labels == ""
            if missing.any():
                pos = score[missing] >= self.config.decision_threshold
                labels = labels.astype(object)
                labels[missing] = np.where(pos, self.config.positive_class, "")
                labels = labels.astype(str)
        return labels

    def _wait(self, misses: np.ndarray, pids: list[str], times: np.ndarray, labels: np.ndarray):
        miss_times = times[misses]
        windows = (miss_times - miss_times % self.window_ms).tolist()
        miss_labels = labels[misses].tolist()
        for k, i in enumerate(misses.tolist()):
            pid = pids[i]
            self.waiting_[pid] = (int(miss_times[k]), miss_labels[k])
            self.waiting_by_window_.setdefault(windows[k], []).append(pid)

    def _join_waiting(self, pid_list: list[str]) -> JoinedBatch | None:
        waiting = self.waiting_
        hits = [p for p in pid_list if p in waiting]
        if not hits:
            return None
        outs = [waiting.pop(p) for p in hits]
        rows = [self.pending_.pop(p) for p in hits]
        out_times = np.fromiter((o[0] for o in outs), dtype=np.int64, count=len(outs))
        if self.regression:
            labels = np.fromiter((o[1] for o in outs), dtype=np.float64, count=len(outs))
        else:
            labels = np.array([o[1] for o in outs], dtype=str)
        return self._build(hits, rows, out_times, labels)

    def _build(
        self,
        pids: list[str],
        rows: list[tuple[int, float, Any]],
        outcome_time: np.ndarray,
        actual: np.ndarray,
    ) -> JoinedBatch:
        times, scores, predicted = zip(*rows, strict=True)
        event_time = np.array(times, dtype=np.int64)
        score = np.array(scores, dtype=np.float64)
        if self.regression:
            pred = np.array(predicted, dtype=np.float64)
            diff = pred - actual
            loss = np.abs(diff) if self.config.loss == "absolute" else diff * diff
        else:
            pred = np.array(predicted, dtype=str)
            if self.config.task == "binary":
                positive = self.config.positive_class
                loss = ((pred == positive) != (actual == positive)).astype(np.float64)
            else:
                loss = (pred != actual).astype(np.float64)
        return JoinedBatch(
            event_time=event_time,
            prediction_id=np.array(pids, dtype=str),
            loss=loss,
            score=score,
            predicted=pred,
            actual=actual,
            outcome_time=outcome_time,
        )

    def _expire_predictions(self, window: int, counts: JoinCounts, evicted: bool) -> None:
        pop = self.pending_.pop
        gone = sum(pop(p, None) is not None for p in self.pending_by_window_.pop(window))
        if gone:
            counts.censored[window] = counts.censored.get(window, 0) + gone
            if evicted:
                counts.evicted[window] = counts.evicted.get(window, 0) + gone

    def _expire_outcomes(self, window: int, counts: JoinCounts) -> None:
        pop = self.waiting_.pop
        counts.orphans += sum(pop(p, None) is not None for p in self.waiting_by_window_.pop(window))

    def _evict(self, counts: JoinCounts) -> None:
        limit = self.config.max_pending
        while len(self.pending_) > limit and self.pending_by_window_:
            oldest = min(self.pending_by_window_)
            log.warning("pending store over %d predictions: evicting window %d", limit, oldest)
            self._expire_predictions(oldest, counts, evicted=True)
        while len(self.waiting_) > limit and self.waiting_by_window_:
            self._expire_outcomes(min(self.waiting_by_window_), counts)
