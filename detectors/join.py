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


def canonical_order(event_time: np.ndarray, prediction_id: np.ndarray) -> np.ndarray:
    """Index sorting records by (event time, prediction id): independent of arrival order.

    Sorting strings is slow, so ids only break ties when event times collide.
    """
    order = np.argsort(event_time, kind="stable")
    if np.any(np.diff(event_time[order]) == 0):
        order = np.lexsort((prediction_id, event_time))
    return order


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


def _id_list(ids: np.ndarray) -> list[str]:
    """Prediction ids as Python strings (kept as given when they already are: their
    hashes are cached, which matters at a million dict operations a second)."""
    items = ids.tolist()
    if set(map(type, items)) == {str}:
        return items
    return [str(i) for i in items]


def _class_name(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(slots=True)
class _Chunk:
    """The columns of one observed prediction batch; rows are freed by count."""

    event_time: np.ndarray
    score: np.ndarray
    predicted: np.ndarray
    live: int
    last_window: int


class Joiner:
    """Pending store joining predictions and outcomes by prediction id (see module doc).

    Waiting predictions stay in their batch's columns; the id index maps an id to a
    row number (an int, so the index is a plain dict the garbage collector skips).
    """

    def __init__(self, config: ConceptConfig, window_ms: int) -> None:
        if window_ms <= 0:
            raise ValueError("window_ms must be positive")
        self.config = config
        self.window_ms = window_ms
        self.regression = config.task == "regression"
        self.pending_: dict[str, int] = {}  # prediction id -> row
        self.chunks_: dict[int, _Chunk] = {}  # first row -> columns, in row order
        self.next_row_ = 0
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
        pid_list = _id_list(batch.prediction_id)
        windows = times - times % self.window_ms
        uniq, inverse, per_window = np.unique(windows, return_inverse=True, return_counts=True)
        counts.predictions = dict(zip(uniq.tolist(), per_window.tolist(), strict=True))
        score = batch.score if batch.score is not None else np.full(len(batch), np.nan)
        base, n = self.next_row_, len(batch)
        self.chunks_[base] = _Chunk(times, score, self._predicted(batch, score), n, int(uniq[-1]))
        self.next_row_ += n
        before = len(self.pending_)
        self.pending_.update(zip(pid_list, range(base, base + n), strict=True))
        counts.duplicates = n - (len(self.pending_) - before)
        if len(uniq) == 1:
            self.pending_by_window_.setdefault(int(uniq[0]), []).extend(pid_list)
        else:
            pids = np.array(pid_list, dtype=object)
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
        pids = _id_list(batch.prediction_id)
        pop = self.pending_.pop
        rows = np.fromiter((pop(p, -1) for p in pids), dtype=np.int64, count=len(pids))
        hit = rows >= 0
        times = np.asarray(batch.event_time, dtype=np.int64)
        if not hit.all():
            self._wait(np.flatnonzero(~hit), pids, times, labels)
        joined = None
        if hit.any():
            idx = np.flatnonzero(hit)
            ids = pids if len(idx) == len(pids) else [pids[i] for i in idx.tolist()]
            joined = self._build(ids, rows[idx], times[idx], labels[idx])
        self._evict(counts)
        if joined is None:
            return JoinedBatch.empty(self.regression, counts)
        joined.counts = counts
        return joined

    def advance(self, watermark_ms: int) -> JoinedBatch:
        """Expire predictions past their label deadline and outcomes past their grace."""
        self.watermark_ = max(self.watermark_, int(watermark_ms))
        counts = JoinCounts()
        ttl_cut = self.watermark_ - self.config.label_ttl_ms - self.window_ms
        for w in sorted(w for w in self.pending_by_window_ if w <= ttl_cut):
            self._expire_predictions(w, counts, evicted=False)
        # every row of these chunks is joined or expired (ids repeated by duplicates too)
        for base in [b for b, c in self.chunks_.items() if c.last_window <= ttl_cut]:
            del self.chunks_[base]
        self._compact()
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
        pop = self.pending_.pop
        rows = np.fromiter((pop(p) for p in hits), dtype=np.int64, count=len(hits))
        out_times = np.fromiter((o[0] for o in outs), dtype=np.int64, count=len(outs))
        if self.regression:
            labels = np.fromiter((o[1] for o in outs), dtype=np.float64, count=len(outs))
        else:
            labels = np.array([o[1] for o in outs], dtype=str)
        return self._build(hits, rows, out_times, labels)

    def _groups(self, rows: np.ndarray) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
        """Rows grouped by chunk: the grouping order, and (chunk base, local rows) groups."""
        bases = np.fromiter(self.chunks_, dtype=np.int64, count=len(self.chunks_))
        which = np.searchsorted(bases, rows, side="right") - 1
        order = np.argsort(which, kind="stable")
        uniq, first, sizes = np.unique(which[order], return_index=True, return_counts=True)
        groups = []
        for u, start, size in zip(uniq.tolist(), first.tolist(), sizes.tolist(), strict=True):
            base = int(bases[u])
            groups.append((base, rows[order[start : start + size]] - base))
        return order, groups

    def _release(self, groups: list[tuple[int, np.ndarray]]) -> None:
        for base, local in groups:
            chunk = self.chunks_[base]
            chunk.live -= len(local)
            if chunk.live <= 0:
                del self.chunks_[base]

    def _read(
        self, order: np.ndarray, groups: list[tuple[int, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(event_time, score, predicted) of the rows, back in the order they were asked."""
        chunks = self.chunks_
        undo = np.empty_like(order)
        undo[order] = np.arange(len(order))
        return (
            np.concatenate([chunks[b].event_time[i] for b, i in groups])[undo],
            np.concatenate([chunks[b].score[i] for b, i in groups])[undo],
            np.concatenate([chunks[b].predicted[i] for b, i in groups])[undo],
        )

    def _compact(self) -> None:
        """Copy the waiting rows into one chunk when dead rows dominate the storage: a
        single unlabelled prediction must not keep its whole batch alive until the TTL."""
        stored = sum(len(c.event_time) for c in self.chunks_.values())
        if stored <= 2 * len(self.pending_) + 10_000:
            return
        pids = list(self.pending_)
        rows = np.fromiter(self.pending_.values(), dtype=np.int64, count=len(pids))
        columns = self._read(*self._groups(rows)) if len(rows) else None
        self.chunks_ = {}
        self.pending_ = dict(
            zip(pids, range(self.next_row_, self.next_row_ + len(pids)), strict=True)
        )
        if columns is not None:
            last = int(columns[0].max())
            self.chunks_[self.next_row_] = _Chunk(*columns, len(pids), last - last % self.window_ms)
        self.next_row_ += len(pids)

    def _build(
        self,
        pids: list[str],
        rows: np.ndarray,
        outcome_time: np.ndarray,
        actual: np.ndarray,
    ) -> JoinedBatch:
        order, groups = self._groups(rows)
        event_time, score, pred = self._read(order, groups)
        self._release(groups)
        if self.regression:
            diff = pred - actual
            loss = np.abs(diff) if self.config.loss == "absolute" else diff * diff
        elif self.config.task == "binary":
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
        ids = self.pending_by_window_.pop(window)
        rows = np.fromiter((pop(p, -1) for p in ids), dtype=np.int64, count=len(ids))
        rows = rows[rows >= 0]
        if len(rows):
            self._release(self._groups(rows)[1])
            counts.censored[window] = counts.censored.get(window, 0) + len(rows)
            if evicted:
                counts.evicted[window] = counts.evicted.get(window, 0) + len(rows)

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
