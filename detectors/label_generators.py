"""Seeded prediction / outcome streams with known change points, label delays and censoring.

Prediction ``i`` has event time ``i * ms_per_event``. Its outcome (unless censored)
arrives after prediction ``i + delay``, with the delay uniform in ``0..max_delay``
events, drawn from ``delay_seed`` - so the same stream can be replayed with a
different label arrival order by changing only ``delay_seed``. Outcome event time is
its arrival time.

>>> s = error_rate_stream(10_000, change_at=5_000, before=0.1, after=0.2, seed=0)
>>> round(float(s.errors[:5_000].mean()), 1), round(float(s.errors[5_000:].mean()), 1)
(0.1, 0.2)
>>> bool((s.arrival >= s.order).all()), len(s.outcomes) == int(s.labelled.sum())
(True, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from driftwire.detectors.alerts import Alert
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch


@dataclass(frozen=True)
class LabelStream:
    predictions: FeatureBatch  # in event-time order
    outcomes: OutcomeBatch  # in arrival order
    arrival: np.ndarray  # per outcome: index of the prediction after which it arrives
    order: np.ndarray  # per outcome: index of its prediction
    labelled: np.ndarray  # per prediction: does its label ever arrive
    errors: np.ndarray  # per prediction: the true error bit or loss
    change_points: tuple[int, ...]
    ms_per_event: int


def _arrivals(
    n: int, max_delay: int, censor: float, delay_seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(delay_seed)
    delay = rng.integers(0, max_delay + 1, n)
    labelled = rng.random(n) >= censor
    idx = np.flatnonzero(labelled)
    arrival = idx + delay[idx]
    order = np.lexsort((rng.random(len(idx)), arrival))  # random order among equal arrivals
    return labelled, idx[order], arrival[order]


def _stream(
    predictions: FeatureBatch,
    truth: np.ndarray,
    errors: np.ndarray,
    change_at: int,
    max_delay: int,
    censor: float,
    delay_seed: int,
    ms_per_event: int,
) -> LabelStream:
    n = len(predictions)
    labelled, order, arrival = _arrivals(n, max_delay, censor, delay_seed)
    outcomes = OutcomeBatch(
        model_id=predictions.model_id,
        prediction_id=predictions.prediction_id[order],
        event_time=arrival.astype(np.int64) * ms_per_event,
        label=truth[order],
    )
    return LabelStream(
        predictions, outcomes, arrival, order, labelled, errors, (change_at,), ms_per_event
    )


def _ids(n: int) -> np.ndarray:
    return np.array([f"p{i:08d}" for i in range(n)], dtype=object)


def error_rate_stream(
    n: int,
    change_at: int,
    before: float,
    after: float,
    max_delay: int = 0,
    censor: float = 0.0,
    seed: int = 0,
    delay_seed: int | None = None,
    ms_per_event: int = 10,
) -> LabelStream:
    """Binary classifier whose error rate steps from ``before`` to ``after`` at ``change_at``."""
    rng = np.random.default_rng(seed)
    rate = np.where(np.arange(n) < change_at, before, after)
    errors = rng.random(n) < rate
    truth = rng.random(n) < 0.5
    predicted = truth ^ errors
    score = np.where(predicted, 0.5 + 0.5 * rng.random(n), 0.5 * rng.random(n))
    preds = FeatureBatch(
        model_id="m",
        prediction_id=_ids(n),
        event_time=np.arange(n, dtype=np.int64) * ms_per_event,
        score=score,
        label=np.where(predicted, "1", "0").astype(object),
    )
    truth_labels = np.where(truth, "1", "0").astype(object)
    return _stream(
        preds,
        truth_labels,
        errors.astype(float),
        change_at,
        max_delay,
        censor,
        seed if delay_seed is None else delay_seed,
        ms_per_event,
    )


def concept_flip_stream(
    n: int,
    change_at: int,
    noise: float = 0.05,
    region: float = 0.7,
    max_delay: int = 0,
    seed: int = 0,
    delay_seed: int | None = None,
    ms_per_event: int = 10,
) -> LabelStream:
    """P(y|x) changes, P(x) does not: after ``change_at`` labels flip where ``x2 > region``.

    Features x1, x2 ~ U(0, 1) throughout; the model predicts ``x1 > 0.5``, which is
    right up to ``noise`` before the change.
    """
    rng = np.random.default_rng(seed)
    x1, x2 = rng.random(n), rng.random(n)
    predicted = x1 > 0.5
    truth = predicted ^ (rng.random(n) < noise)
    flipped = (np.arange(n) >= change_at) & (x2 > region)
    truth = truth ^ flipped
    preds = FeatureBatch(
        model_id="m",
        prediction_id=_ids(n),
        event_time=np.arange(n, dtype=np.int64) * ms_per_event,
        numeric={"x1": x1, "x2": x2},
        score=np.clip(x1, 0.0, 1.0),
        label=np.where(predicted, "1", "0").astype(object),
    )
    return _stream(
        preds,
        np.where(truth, "1", "0").astype(object),
        (predicted != truth).astype(float),
        change_at,
        max_delay,
        0.0,
        seed if delay_seed is None else delay_seed,
        ms_per_event,
    )


def regression_stream(
    n: int,
    change_at: int,
    factor: float = 2.0,
    max_delay: int = 0,
    seed: int = 0,
    delay_seed: int | None = None,
    ms_per_event: int = 10,
) -> LabelStream:
    """Regressor whose absolute error is multiplied by ``factor`` from ``change_at``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    truth = 3.0 * x + 1.0
    scale = np.where(np.arange(n) < change_at, 1.0, factor)
    predicted = truth + rng.normal(size=n) * scale
    preds = FeatureBatch(
        model_id="m",
        prediction_id=_ids(n),
        event_time=np.arange(n, dtype=np.int64) * ms_per_event,
        numeric={"x": x},
        score=predicted,
    )
    return _stream(
        preds,
        truth,
        np.abs(predicted - truth),
        change_at,
        max_delay,
        0.0,
        seed if delay_seed is None else delay_seed,
        ms_per_event,
    )


class Tracker(Protocol):
    """A ConceptTracker; a Monitor (update_features / update_outcomes) works too."""

    def advance(self, watermark_ms: int) -> list[Alert]: ...


@dataclass(frozen=True, slots=True)
class Step:
    predictions: FeatureBatch
    outcomes: OutcomeBatch | None
    watermark: int


def steps(stream: LabelStream, batch: int = 1000) -> Iterator[Step]:
    """The stream as it would be consumed: a block of predictions, the labels that
    arrived meanwhile, then the watermark (the last prediction's event time)."""
    n = len(stream.predictions)
    times = stream.predictions.event_time
    cut = np.searchsorted(stream.arrival, np.arange(batch, n + batch, batch) - 1, side="right")
    lo = 0
    for k, start in enumerate(range(0, n, batch)):
        end = min(start + batch, n)
        hi = int(cut[k]) if end < n else len(stream.arrival)
        outs = stream.outcomes.take(np.arange(lo, hi)) if hi > lo else None
        yield Step(stream.predictions.take(np.arange(start, end)), outs, int(times[end - 1]))
        lo = hi


def replay(
    stream: LabelStream, tracker: Tracker, batch: int = 1000, flush_ms: int | None = None
) -> list[Alert]:
    """Feed a whole stream, then advance ``flush_ms`` (default: 30 days) past its end."""
    on_predictions = getattr(tracker, "update_features", None) or tracker.observe_predictions
    on_outcomes = getattr(tracker, "update_outcomes", None) or tracker.observe_outcomes
    alerts: list[Alert] = []
    for step in steps(stream, batch):
        alerts += on_predictions(step.predictions) or []
        if step.outcomes is not None:
            alerts += on_outcomes(step.outcomes) or []
        alerts += tracker.advance(step.watermark)
    end = int(stream.predictions.event_time[-1])
    alerts += tracker.advance(end + (flush_ms if flush_ms is not None else 30 * 86_400_000))
    return alerts
