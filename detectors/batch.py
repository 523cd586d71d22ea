"""Columnar batches: the only way events enter the engine.

One array per column, never a list of per-event dicts, so every statistic the
engine computes is a column operation. Missing numeric values are NaN; missing
categorical values are ``None``. Times are event time in epoch milliseconds.

>>> import numpy as np
>>> from driftwire.detectors.batch import FeatureBatch
>>> batch = FeatureBatch.from_records([
...     {"model_id": "m", "prediction_id": "p1", "event_time": 1000,
...      "numeric": {"x": 1.5}, "categorical": {"c": "a"},
...      "prediction": {"score": 0.9, "label": "1"}},
...     {"model_id": "m", "prediction_id": "p2", "event_time": 2000,
...      "numeric": {"x": None}, "categorical": {},
...      "prediction": {"score": 0.1, "label": "0"}},
... ])
>>> len(batch), batch.numeric["x"].tolist(), batch.categorical["c"].tolist()
(2, [1.5, nan], ['a', None])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _column(values: Iterable[Any], dtype: Any) -> np.ndarray:
    if dtype is object:
        return np.array(list(values), dtype=object)
    return np.fromiter(values, dtype=dtype)


def _float_or_nan(value: Any) -> float:
    return np.nan if value is None else float(value)


@dataclass(slots=True)
class FeatureBatch:
    """Feature events (one per prediction) of one model, as column arrays."""

    model_id: str
    prediction_id: np.ndarray  # object (str)
    event_time: np.ndarray  # int64, epoch ms
    numeric: dict[str, np.ndarray] = field(default_factory=dict)  # float64, NaN = missing
    categorical: dict[str, np.ndarray] = field(default_factory=dict)  # object, None = missing
    score: np.ndarray | None = None  # float64 prediction score, NaN = missing
    label: np.ndarray | None = None  # object predicted class, None = missing
    segment: np.ndarray | None = None  # object segment tag, None = no segment
    model_version: np.ndarray | None = None  # object
    latency_ms: np.ndarray | None = None  # float64 inference latency, NaN = missing

    def __post_init__(self) -> None:
        n = len(self.event_time)
        for name, col in self._columns():
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.event_time)

    def _columns(self) -> Iterable[tuple[str, np.ndarray]]:
        yield "prediction_id", self.prediction_id
        yield from self.numeric.items()
        yield from self.categorical.items()
        for name in ("score", "label", "segment", "model_version", "latency_ms"):
            col = getattr(self, name)
            if col is not None:
                yield name, col

    def take(self, index: np.ndarray) -> FeatureBatch:
        """Rows selected by a boolean mask or an integer index array."""

        def pick(col: np.ndarray | None) -> np.ndarray | None:
            return None if col is None else col[index]

        return FeatureBatch(
            model_id=self.model_id,
            prediction_id=self.prediction_id[index],
            event_time=self.event_time[index],
            numeric={k: v[index] for k, v in self.numeric.items()},
            categorical={k: v[index] for k, v in self.categorical.items()},
            score=pick(self.score),
            label=pick(self.label),
            segment=pick(self.segment),
            model_version=pick(self.model_version),
            latency_ms=pick(self.latency_ms),
        )

    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping[str, Any]],
        numeric_names: Sequence[str] | None = None,
        categorical_names: Sequence[str] | None = None,
        segment_key: str | None = None,
    ) -> FeatureBatch:
        """Columns from decoded `FeatureEvent` records of one model.

        Feature names default to the union seen in the records; absent keys are missing values.
        """
        if not records:
            raise ValueError("from_records needs at least one record")
        if numeric_names is None:
            numeric_names = sorted({k for r in records for k in r.get("numeric", {})})
        if categorical_names is None:
            categorical_names = sorted({k for r in records for k in r.get("categorical", {})})
        nums = [r.get("numeric") or {} for r in records]
        cats = [r.get("categorical") or {} for r in records]
        preds = [r.get("prediction") or {} for r in records]
        return cls(
            model_id=str(records[0]["model_id"]),
            prediction_id=_column((r["prediction_id"] for r in records), object),
            event_time=_column((r["event_time"] for r in records), np.int64),
            numeric={
                f: _column((_float_or_nan(n.get(f)) for n in nums), np.float64)
                for f in numeric_names
            },
            categorical={f: _column((c.get(f) for c in cats), object) for f in categorical_names},
            score=_column((_float_or_nan(p.get("score")) for p in preds), np.float64),
            label=_column((p.get("label") for p in preds), object),
            segment=(
                _column(((r.get("segments") or {}).get(segment_key) for r in records), object)
                if segment_key
                else None
            ),
            model_version=_column((r.get("model_version") for r in records), object),
            latency_ms=_column((_float_or_nan(r.get("latency_ms")) for r in records), np.float64),
        )


@dataclass(slots=True)
class OutcomeBatch:
    """Ground-truth events, joined to predictions by prediction id."""

    model_id: str
    prediction_id: np.ndarray  # object (str)
    event_time: np.ndarray  # int64, epoch ms, when the outcome was observed
    label: np.ndarray  # object (class name) or float64 (regression target)

    def __post_init__(self) -> None:
        n = len(self.event_time)
        if len(self.prediction_id) != n or len(self.label) != n:
            raise ValueError("outcome columns must all have the same number of rows")

    def __len__(self) -> int:
        return len(self.event_time)

    def take(self, index: np.ndarray) -> OutcomeBatch:
        return OutcomeBatch(
            model_id=self.model_id,
            prediction_id=self.prediction_id[index],
            event_time=self.event_time[index],
            label=self.label[index],
        )

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> OutcomeBatch:
        """Columns from decoded `OutcomeEvent` records of one model."""
        if not records:
            raise ValueError("from_records needs at least one record")
        labels = [r.get("label") for r in records]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in labels)
        return cls(
            model_id=str(records[0]["model_id"]),
            prediction_id=_column((r["prediction_id"] for r in records), object),
            event_time=_column((r["event_time"] for r in records), np.int64),
            label=_column(labels, np.float64 if numeric else object),
        )
