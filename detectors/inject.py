"""Drift injection for what-if backtests: pure functions on columnar batches.

An :class:`Injection` changes one feature (or the outcome labels) of one model from a
given event time on, and records itself as a ground-truth :class:`ChangePoint`, so a
backtest can score whether the engine found it and how late.

Kinds:

- ``shift``: numeric ``x + amount``;
- ``scale``: numeric ``center + (x - center) * amount`` (``center`` defaults to 0);
- ``missing``: a fraction ``amount`` of values become missing (NaN / None);
- ``new_category``: a fraction ``amount`` of a categorical feature becomes ``category``;
- ``label_flip``: a fraction ``amount`` of outcome labels is flipped (0/1 values become
  1 - v; class labels move to the next entry of ``classes``). It acts on the *outcome*
  event time, while the engine windows outcomes by their prediction's time: a window
  that ends less than one label delay before ``at`` already holds flipped labels.

Random choices come from one seeded generator per injection that draws one number per
row of every batch it sees, so the same rows are picked whatever the batch sizes are.

>>> import numpy as np
>>> from driftwire.detectors.batch import FeatureBatch
>>> from driftwire.detectors.inject import Injection, Injector
>>> batch = FeatureBatch(model_id="m", prediction_id=np.array(["a", "b", "c"], dtype=object),
...                      event_time=np.array([0, 10, 20]), numeric={"x": np.zeros(3)})
>>> injector = Injector([Injection("shift", feature="x", at=10, amount=2.0)])
>>> injector.features(batch).numeric["x"].tolist()
[0.0, 2.0, 2.0]
>>> [(c.feature, c.at) for c in injector.truth()]
[('x', 10)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.scoring import ChangePoint, parse_time_ms

InjectionKind = Literal["shift", "scale", "missing", "new_category", "label_flip"]
KINDS: tuple[str, ...] = ("shift", "scale", "missing", "new_category", "label_flip")
_FRACTION_KINDS = frozenset({"missing", "new_category", "label_flip"})


@dataclass(frozen=True, slots=True)
class Injection:
    """One injected change: `kind` on `feature` of `model` (None = every model) from `at` ms."""

    kind: InjectionKind
    at: int
    feature: str | None = None
    amount: float = 1.0
    model: str | None = None
    center: float = 0.0
    category: str = "__injected__"
    classes: tuple[str, ...] = ("0", "1")
    seed: int = 0
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown injection kind {self.kind!r}; expected one of {KINDS}")
        if self.kind != "label_flip" and not self.feature:
            raise ValueError(f"a {self.kind} injection needs a feature")
        if self.kind in _FRACTION_KINDS and not 0.0 <= self.amount <= 1.0:
            raise ValueError(f"{self.kind}: amount is a fraction in [0, 1], got {self.amount}")

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> Injection:
        """From a config entry; `at` may be epoch ms or an ISO-8601 time."""
        values = dict(spec)
        values["at"] = parse_time_ms(values["at"])
        if "classes" in values:
            values["classes"] = tuple(str(c) for c in values["classes"])
        return cls(**values)

    def change_point(self, model: str) -> ChangePoint:
        """The ground truth this injection creates for `model`.

        A feature injection may be caught by any detector on that feature (drift or
        quality), so its kind stays open; a label flip is concept drift of the model.
        """
        kind = "concept_drift" if self.kind == "label_flip" else None
        name = self.label or f"{self.kind} {self.feature or 'labels'} x{self.amount:g}"
        return ChangePoint(model=model, at=self.at, kind=kind, feature=self.feature, label=name)


@dataclass(slots=True)
class Injector:
    """Applies injections to the batches of a replay and remembers which models it touched.

    Stateful only in its random generators and the set of models seen, so feeding the same
    batches in the same order always gives the same result.
    """

    injections: Sequence[Injection]
    rngs_: list[np.random.Generator] = field(init=False)
    models_: dict[int, set[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.rngs_ = [np.random.default_rng(inj.seed) for inj in self.injections]
        self.models_ = {i: set() for i in range(len(self.injections))}

    def features(self, batch: FeatureBatch) -> FeatureBatch:
        for i, inj in enumerate(self.injections):
            if inj.kind == "label_flip" or not _applies(inj, batch.model_id):
                continue
            draws = self.rngs_[i].random(len(batch))
            batch = inject_features(batch, inj, draws)
            self.models_[i].add(batch.model_id)
        return batch

    def outcomes(self, batch: OutcomeBatch) -> OutcomeBatch:
        for i, inj in enumerate(self.injections):
            if inj.kind != "label_flip" or not _applies(inj, batch.model_id):
                continue
            draws = self.rngs_[i].random(len(batch))
            batch = flip_labels(batch, inj, draws)
            self.models_[i].add(batch.model_id)
        return batch

    def truth(self, models: Iterable[str] = ()) -> list[ChangePoint]:
        """Change points of the injections, for every model they touched (or `models`)."""
        extra = set(models)
        points = [
            inj.change_point(model)
            for i, inj in enumerate(self.injections)
            for model in sorted(self.models_[i] | (extra if inj.model is None else set()))
            if inj.model in (None, model)
        ]
        return sorted(points, key=lambda c: (c.at, c.model, c.feature or ""))


def _applies(inj: Injection, model_id: str) -> bool:
    return inj.model is None or inj.model == model_id


def inject_features(batch: FeatureBatch, inj: Injection, draws: np.ndarray) -> FeatureBatch:
    """A copy of `batch` with `inj` applied to rows at or after `inj.at`.

    `draws` holds one uniform [0, 1) number per row; fraction kinds change rows whose draw
    is below `amount`. The input batch is never modified.
    """
    active = batch.event_time >= inj.at
    if inj.kind in _FRACTION_KINDS:
        active &= draws < inj.amount
    if not active.any():
        return batch
    name = str(inj.feature)
    if inj.kind in ("shift", "scale"):
        col = _numeric(batch, name).copy()
        if inj.kind == "shift":
            col[active] += inj.amount
        else:
            col[active] = inj.center + (col[active] - inj.center) * inj.amount
        return replace(batch, numeric={**batch.numeric, name: col})
    if inj.kind == "missing":
        if name in batch.numeric:
            col = batch.numeric[name].copy()
            col[active] = np.nan
            return replace(batch, numeric={**batch.numeric, name: col})
        col = _categorical(batch, name).copy()
        col[active] = None
        return replace(batch, categorical={**batch.categorical, name: col})
    col = _categorical(batch, name).copy()
    col[active] = inj.category
    return replace(batch, categorical={**batch.categorical, name: col})


def flip_labels(batch: OutcomeBatch, inj: Injection, draws: np.ndarray) -> OutcomeBatch:
    """A copy of `batch` with a fraction of labels at or after `inj.at` flipped."""
    active = (batch.event_time >= inj.at) & (draws < inj.amount)
    if not active.any():
        return batch
    label = batch.label.copy()
    if label.dtype.kind == "f":
        label[active] = 1.0 - label[active]
    else:
        following = {c: inj.classes[(k + 1) % len(inj.classes)] for k, c in enumerate(inj.classes)}
        label[active] = [following.get(str(v), v) for v in label[active]]
    return replace(batch, label=label)


def _numeric(batch: FeatureBatch, name: str) -> np.ndarray:
    if name not in batch.numeric:
        raise KeyError(f"numeric feature {name!r} not in batch of model {batch.model_id!r}")
    return batch.numeric[name]


def _categorical(batch: FeatureBatch, name: str) -> np.ndarray:
    if name not in batch.categorical:
        raise KeyError(f"categorical feature {name!r} not in batch of model {batch.model_id!r}")
    return batch.categorical[name]
