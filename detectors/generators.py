"""Deterministic synthetic feature streams with known change points.

Numeric features ``x0..`` are standard normal, categorical features ``c0..`` draw categories
``v0..`` with Zipf-like frequencies, the score is a logistic function of ``x0..x2`` plus
noise, events are evenly spaced at `rate` per second of event time. Drifts are applied on
top of the same random draws (the draws never depend on the drifts), so a drifted stream
and its no-drift control differ only where the truth says.

Kinds of drift: `Shift` (abrupt, incremental ramp, gradual mixing, recurring on/off) of the
numeric mean in standard deviations, `MissingSpike`, `NewCategory`. `truth()` lists them as
`ChangePoint`s for scoring.

>>> spec = StreamSpec(n_numeric=2, n_categorical=1, rate=100.0, seed=1)
>>> drifts = [Shift(features=("x0",), start_ms=5_000, magnitude=3.0)]
>>> batches = list(generate(spec, 10_000, drifts=drifts, batch_size=500))
>>> [len(b) for b in batches], sorted(batches[0].numeric)
([500, 500], ['x0', 'x1'])
>>> round(float(batches[0].numeric["x0"].mean())), round(float(batches[1].numeric["x0"].mean()))
(0, 3)
>>> truth(drifts)[0].start_ms
5000
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from driftwire.detectors.batch import FeatureBatch


@dataclass(frozen=True)
class StreamSpec:
    n_numeric: int = 20
    n_categorical: int = 5
    n_categories: int = 8
    rate: float = 1_000.0  # events per second of event time
    seed: int = 0
    model_id: str = "synthetic"
    segments: tuple[str, ...] = ()  # segment tags, drawn uniformly when given

    @property
    def numeric_names(self) -> list[str]:
        return [f"x{i}" for i in range(self.n_numeric)]

    @property
    def categorical_names(self) -> list[str]:
        return [f"c{i}" for i in range(self.n_categorical)]

    def category_probs(self) -> np.ndarray:
        weights = 1.0 / np.arange(1, self.n_categories + 1)
        return weights / weights.sum()


@dataclass(frozen=True)
class Shift:
    """Mean shift of numeric features by `magnitude` standard deviations.

    abrupt: from start_ms (to end_ms); incremental: linear ramp over duration_ms;
    gradual: each event comes from the shifted concept with a probability rising from 0 to 1
    over duration_ms; recurring: on for period_ms, off for period_ms, from start_ms."""

    features: tuple[str, ...]
    start_ms: int
    magnitude: float = 0.25
    kind: Literal["abrupt", "incremental", "gradual", "recurring"] = "abrupt"
    duration_ms: int = 0
    period_ms: int = 0
    end_ms: int | None = None

    def factor(self, t: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """Share of `magnitude` applied to each event (0..1)."""
        active = t >= self.start_ms
        if self.end_ms is not None:
            active &= t < self.end_ms
        ramp = np.clip((t - self.start_ms) / max(self.duration_ms, 1), 0.0, 1.0)
        if self.kind == "incremental":
            return ramp * active
        if self.kind == "gradual":
            return (uniform < ramp) * active
        if self.kind == "recurring":
            on = ((t - self.start_ms) // max(self.period_ms, 1)) % 2 == 0
            return (on & active).astype(np.float64)
        return active.astype(np.float64)


@dataclass(frozen=True)
class MissingSpike:
    features: tuple[str, ...]
    start_ms: int
    end_ms: int
    rate: float = 0.3


@dataclass(frozen=True)
class NewCategory:
    feature: str
    start_ms: int
    share: float = 0.05
    category: str = "__new__"
    end_ms: int | None = None


Drift = Shift | MissingSpike | NewCategory


@dataclass(frozen=True)
class ChangePoint:
    kind: str
    features: tuple[str, ...]
    start_ms: int
    end_ms: int | None


def truth(drifts: Sequence[Drift]) -> list[ChangePoint]:
    out = []
    for d in drifts:
        if isinstance(d, Shift):
            out.append(ChangePoint(f"shift_{d.kind}", d.features, d.start_ms, d.end_ms))
        elif isinstance(d, MissingSpike):
            out.append(ChangePoint("missing_spike", d.features, d.start_ms, d.end_ms))
        else:
            out.append(ChangePoint("new_category", (d.feature,), d.start_ms, d.end_ms))
    return out


def generate(
    spec: StreamSpec,
    duration_ms: int,
    drifts: Sequence[Drift] = (),
    start_ms: int = 0,
    batch_size: int = 10_000,
) -> Iterator[FeatureBatch]:
    """Batches covering [start_ms, start_ms + duration_ms) of event time."""
    rng = np.random.default_rng(spec.seed)
    n_total = int(duration_ms * spec.rate / 1000)
    step = 1000.0 / spec.rate
    cats = [np.array([f"v{k}" for k in range(spec.n_categories)], dtype=object)]
    probs = spec.category_probs()
    for i0 in range(0, n_total, batch_size):
        idx = np.arange(i0, min(i0 + batch_size, n_total))
        t = start_ms + np.floor(idx * step).astype(np.int64)
        yield _batch(spec, rng, idx, t, cats[0], probs, drifts)


def take_events(
    spec: StreamSpec, n: int, start_ms: int = 0, seed_offset: int = 10_007
) -> FeatureBatch:
    """`n` stationary events from an independent seed (e.g. a reference sample)."""
    other = StreamSpec(**{**spec.__dict__, "seed": spec.seed + seed_offset})
    duration = int(np.ceil(n * 1000 / spec.rate)) + 1
    return next(iter(generate(other, duration, start_ms=start_ms, batch_size=n)))


def _batch(
    spec: StreamSpec,
    rng: np.random.Generator,
    idx: np.ndarray,
    t: np.ndarray,
    categories: np.ndarray,
    probs: np.ndarray,
    drifts: Sequence[Drift],
) -> FeatureBatch:
    n = len(idx)
    # Every draw happens whatever the drifts, so streams stay aligned with their control.
    numeric = rng.standard_normal((spec.n_numeric, n))
    cat_codes = rng.choice(len(categories), size=(spec.n_categorical, n), p=probs)
    uniform = rng.random(n)
    noise = rng.standard_normal(n)
    seg_codes = rng.integers(0, max(len(spec.segments), 1), n)
    names = spec.numeric_names
    for d in drifts:
        if isinstance(d, Shift):
            shift = d.magnitude * d.factor(t, uniform)
            for f in d.features:
                numeric[names.index(f)] += shift
    # the model scored the true values; a missing spike is in what the monitor receives
    logit = sum(0.8 * numeric[i] for i in range(min(3, spec.n_numeric))) + 0.5 * noise
    num = {f: numeric[i] for i, f in enumerate(names)}
    cat = {f: categories[cat_codes[i]] for i, f in enumerate(spec.categorical_names)}
    for d in drifts:
        if isinstance(d, MissingSpike):
            hit = (t >= d.start_ms) & (t < d.end_ms) & (uniform < d.rate)
            for f in d.features:
                col = num.get(f)
                if col is not None:
                    col[hit] = np.nan
                else:
                    cat[f] = cat[f].copy()
                    cat[f][hit] = None
        elif isinstance(d, NewCategory):
            live = t >= d.start_ms if d.end_ms is None else (t >= d.start_ms) & (t < d.end_ms)
            hit = live & (np.abs(noise) < _normal_quantile_half(d.share))
            cat[d.feature] = cat[d.feature].copy()
            cat[d.feature][hit] = d.category
    return FeatureBatch(
        model_id=spec.model_id,
        prediction_id=idx.astype(str).astype(object),
        event_time=t,
        numeric=num,
        categorical=cat,
        score=1.0 / (1.0 + np.exp(-logit)),
        label=np.where(logit > 0, "1", "0").astype(object),
        segment=np.array(spec.segments, dtype=object)[seg_codes] if spec.segments else None,
    )


def _normal_quantile_half(share: float) -> float:
    """c with P(|Z| < c) = share, so a share of events can be picked from the noise draw."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + share / 2))
