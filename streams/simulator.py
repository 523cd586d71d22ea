"""A retail-style synthetic world for the demo: three models, their traffic and their labels.

- ``fraud-scorer`` (binary): card payments; labels (chargebacks) arrive late.
- ``recommender`` (click probability): product impressions.
- ``churn-predictor``: a stationary control that should never alert.

Incidents are switched on by event time, so the same seed and clock give the same
stream. Everything is numpy column work; rows become dicts only at the Kafka edge.

>>> sim = RetailSimulator(seed=1, incidents=())
>>> cols = sim.features("fraud-scorer", np.arange(5, dtype=np.int64))
>>> sorted(cols.numeric), len(cols.prediction_id)
(['account_age_days', 'amount', 'distance_km', 'txn_per_hour'], 5)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODELS = ("fraud-scorer", "recommender", "churn-predictor")


@dataclass(frozen=True)
class Incident:
    """Something that goes wrong in production, from `start_ms` (event time) on."""

    name: str
    model_id: str
    kind: str  # the alert kind it should raise: data_drift, data_quality, concept_drift
    feature: str | None
    start_ms: int
    end_ms: int | None = None
    description: str = ""

    def active(self, t: np.ndarray) -> np.ndarray:
        on = t >= self.start_ms
        return on if self.end_ms is None else on & (t < self.end_ms)


@dataclass
class Columns:
    """One model's feature events as columns (the engine's shape, before Avro)."""

    model_id: str
    prediction_id: np.ndarray
    event_time: np.ndarray
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    score: np.ndarray
    label: np.ndarray  # predicted class, as strings
    truth: np.ndarray | None = None  # the true class (binary models), for outcomes

    def records(self) -> list[dict[str, Any]]:
        """`FeatureEvent` records, one per row (for producing to Kafka)."""
        num_names, cat_names = list(self.numeric), list(self.categorical)
        num_rows = np.column_stack([self.numeric[f] for f in num_names]).tolist()
        cat_cols = [self.categorical[f].tolist() for f in cat_names]
        out = []
        for i, (pid, t, s, lab) in enumerate(
            zip(
                self.prediction_id.tolist(),
                self.event_time.tolist(),
                self.score.tolist(),
                self.label.tolist(),
                strict=True,
            )
        ):
            numeric = {
                f: (None if v != v else v) for f, v in zip(num_names, num_rows[i], strict=True)
            }
            out.append(
                {
                    "model_id": self.model_id,
                    "model_version": "v1",
                    "prediction_id": pid,
                    "event_time": t,
                    "numeric": numeric,
                    "categorical": {f: col[i] for f, col in zip(cat_names, cat_cols, strict=True)},
                    "prediction": {"score": s, "label": lab},
                }
            )
        return out

    def flat(self) -> dict[str, np.ndarray]:
        """Flat columns (one per feature + score + label), e.g. for a Parquet reference."""
        return {
            "event_time": self.event_time,
            **self.numeric,
            **self.categorical,
            "score": self.score,
            "label": self.label,
        }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _pick(rng: np.random.Generator, names: tuple[str, ...], probs: tuple[float, ...], n: int):
    return np.array(names, dtype=object)[rng.choice(len(names), size=n, p=probs)]


@dataclass
class RetailSimulator:
    """Seeded generator of feature events and delayed outcomes with known incidents."""

    seed: int = 7
    incidents: tuple[Incident, ...] = ()
    label_delay_ms: tuple[int, int] = (5_000, 60_000)
    rng_: np.random.Generator = field(init=False, repr=False)
    next_id_: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng_ = np.random.default_rng(self.seed)

    def _active(self, model_id: str, kind: str, t: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(t), dtype=bool)
        for inc in self.incidents:
            if inc.model_id == model_id and inc.kind == kind:
                mask |= inc.active(t)
        return mask

    def _ids(self, model_id: str, n: int) -> np.ndarray:
        ids = np.arange(self.next_id_, self.next_id_ + n)
        self.next_id_ += n
        return np.char.add(f"{model_id[:3]}-", ids.astype(str)).astype(object)

    def features(self, model_id: str, t: np.ndarray) -> Columns:
        make = {
            "fraud-scorer": self._fraud,
            "recommender": self._recommender,
            "churn-predictor": self._churn,
        }[model_id]
        return make(t.astype(np.int64), self._ids(model_id, len(t)))

    def _fraud(self, t: np.ndarray, ids: np.ndarray) -> Columns:
        rng, n = self.rng_, len(t)
        amount = rng.lognormal(3.5, 1.0, n)
        age = rng.gamma(2.0, 300.0, n)
        txn = rng.poisson(2.0, n).astype(float)
        dist = rng.exponential(15.0, n)
        channel = _pick(rng, ("web", "app", "pos"), (0.35, 0.4, 0.25), n)
        merchant = _pick(
            rng,
            ("grocery", "travel", "electronics", "fashion", "gaming"),
            (0.35, 0.15, 0.2, 0.2, 0.1),
            n,
        )
        score = _sigmoid(0.8 * (np.log(amount) - 3.5) - age / 600 + 0.3 * txn - 2.0)
        predicted = score > 0.5
        # Well calibrated before the incident: 6% of the model's calls are wrong.
        wrong = rng.random(n) < 0.06
        # Concept drift: fraudsters adapt on the app channel; P(y|x) changes, P(x) does not.
        adapted = self._active("fraud-scorer", "concept_drift", t) & (channel == "app")
        wrong |= adapted & (rng.random(n) < 0.35)
        truth = np.where(wrong, ~predicted, predicted)
        broken = self._active("fraud-scorer", "data_quality", t) & (rng.random(n) < 0.4)
        age = np.where(broken, np.nan, age)  # an upstream join stops filling account age
        return Columns(
            "fraud-scorer",
            ids,
            t,
            {"amount": amount, "account_age_days": age, "txn_per_hour": txn, "distance_km": dist},
            {"channel": channel, "merchant_category": merchant},
            score,
            np.where(predicted, "1", "0").astype(object),
            np.where(truth, "1", "0").astype(object),
        )

    def _recommender(self, t: np.ndarray, ids: np.ndarray) -> Columns:
        rng, n = self.rng_, len(t)
        price = rng.lognormal(3.0, 0.5, n)
        # A new price tier ships: prices shift up and discounts dry up.
        tier = self._active("recommender", "data_drift", t)
        price = np.where(tier, price * 1.6, price)
        discount = np.where(tier, rng.beta(1, 12, n), rng.beta(2, 8, n))
        session = rng.gamma(3.0, 60.0, n)
        viewed = rng.poisson(6.0, n).astype(float)
        device = _pick(rng, ("mobile", "desktop", "tablet"), (0.6, 0.3, 0.1), n)
        category = _pick(
            rng,
            ("home", "garden", "toys", "books", "sports", "beauty"),
            (0.25, 0.1, 0.15, 0.2, 0.15, 0.15),
            n,
        )
        score = _sigmoid(-0.5 * (np.log(price) - 3.0) + 3 * discount + 0.05 * viewed - 1.5)
        return Columns(
            "recommender",
            ids,
            t,
            {
                "price": price,
                "discount_pct": discount,
                "session_seconds": session,
                "items_viewed": viewed,
            },
            {"device": device, "category": category},
            score,
            np.where(score > 0.5, "1", "0").astype(object),
        )

    def _churn(self, t: np.ndarray, ids: np.ndarray) -> Columns:
        rng, n = self.rng_, len(t)
        tenure = rng.gamma(2.0, 12.0, n)
        spend = rng.lognormal(4.0, 0.7, n)
        tickets = rng.poisson(0.5, n).astype(float)
        plan = _pick(rng, ("basic", "plus", "premium"), (0.5, 0.35, 0.15), n)
        score = _sigmoid(-0.05 * tenure + 0.6 * tickets - 0.5)
        return Columns(
            "churn-predictor",
            ids,
            t,
            {"tenure_months": tenure, "monthly_spend": spend, "support_tickets": tickets},
            {"plan": plan},
            score,
            np.where(score > 0.5, "1", "0").astype(object),
        )

    def outcomes(self, cols: Columns) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Due times (event time the label becomes known) and `OutcomeEvent` records."""
        if cols.truth is None:
            return np.empty(0, dtype=np.int64), []
        lo, hi = self.label_delay_ms
        due = cols.event_time + self.rng_.integers(lo, hi, len(cols.event_time))
        records = [
            {"model_id": cols.model_id, "prediction_id": pid, "event_time": when, "label": y}
            for pid, when, y in zip(
                cols.prediction_id.tolist(), due.tolist(), cols.truth.tolist(), strict=True
            )
        ]
        return due, records
