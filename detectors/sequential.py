"""River change detectors on the joined error / loss stream, with calibrated defaults.

Each :class:`SequentialDetector` wraps one River detector and feeds it a block of
values (error bits for classification, losses for regression) in the order the
caller gives, which for driftwire is prediction event-time order (see
:mod:`driftwire.detectors.concept`). It reports where in the block a drift or a
warning happened; turning that into a :class:`~driftwire.detectors.alerts.Verdict`
is the caller's job.

Direction: every detector here must flag a *rise* in the error rate or loss.
River's FHDDM flags a *drop* in its input's mean, so it is fed ``1 - error``
(1 = correct). PageHinkley runs in ``mode="up"`` only.

Scale: PageHinkley's ``delta`` and ``threshold`` are in the units of its input, so
it (and ADWIN on regression losses, whose bound assumes a [0, 1] range) sees the
values divided by the standard deviation of the first ``scale_warmup`` values.
Those warm-up values only learn the scale; they are not fed to the detector.

Calibrated defaults (``DEFAULT_PARAMS``) were chosen so that 1,000,000 stationary
error bits at rate 0.1 raise no drift *and no warning* (several seeds), while an
error rate going 0.10 -> 0.20 after 20,000 events is still found quickly. The
figures behind each choice are next to it; ``bench/concept.py`` re-measures them.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> errors = np.concatenate([rng.random(20_000) < 0.1, rng.random(5_000) < 0.3]).astype(float)
>>> det = SequentialDetector("adwin")
>>> changes = det.update(errors)
>>> [c.severity for c in changes if c.index < 20_000]
[]
>>> first = next(c for c in changes if c.severity == "drift")
>>> 20_000 <= first.index < 21_000
True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import drift
from river.drift import binary

log = logging.getLogger(__name__)

#: Detectors that only accept 0/1 inputs (classification error bits).
BINARY_ONLY = frozenset({"ddm", "eddm", "hddma", "hddmw", "fhddm"})

_FACTORIES: dict[str, Callable[..., Any]] = {
    "ddm": binary.DDM,
    "eddm": binary.EDDM,
    "hddma": binary.HDDMA,
    "hddmw": binary.HDDMW,
    "fhddm": binary.FHDDM,
    "adwin": drift.ADWIN,
    "page_hinkley": drift.PageHinkley,
}

#: Calibrated defaults, measured on seeded streams (bench/concept.py re-measures them):
#: "0 on 1M" = no drift and no warning on 1,000,000 stationary error bits at p=0.1;
#: "delay" = samples to flag 0.10 -> 0.20 after 20,000 stationary samples.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    # River's defaults already give 0 on 1M at p=0.1 over 3 seeds, delay 250-510. Kept.
    "adwin": {"delta": 0.002},
    # Defaults (window 100, 1e-6) fire 58 times on 500k bits at p=0.3: the max of a
    # 100-sample mean is too noisy. A 1000 window with 1e-8 gives 0 on 1M, delay 600-770.
    "fhddm": {"sliding_window_size": 1000, "confidence_level": 1e-8},
    # Defaults give 2 warnings on 1M; 1e-5 / 1e-4 give 0 on 1M over 2 seeds, delay 520-1280.
    # About 5x slower per sample than ADWIN, so not in the default set.
    "hddma": {"drift_confidence": 1e-5, "warning_confidence": 1e-4},
    # Defaults give 7 warnings on 1M. A slower EWMA (lambda 0.01) with 1e-4 / 1e-3 gives
    # 0 on 300k (it is the slowest detector, ~220k/s), delay ~2,400. Tighter confidences
    # (1e-5 with lambda 0.02) stopped it detecting 0.1 -> 0.2 at all within 50k.
    "hddmw": {"drift_confidence": 1e-4, "warning_confidence": 1e-3, "lambda_val": 0.01},
    # Defaults: 1 drift and ~2,000 warning samples on 1M, and an early lucky minimum
    # of p+s locks the reference so 0.1 -> 0.2 went unseen for 50k samples. A 5,000
    # warm start and 4 / 5 sigma give 0 on 1M over 3 seeds.
    "ddm": {"warm_start": 5000, "warning_threshold": 4.0, "drift_threshold": 5.0},
    # Defaults: 102 drifts and ~3,200 warning samples on 1M. EDDM watches the distance
    # between errors, whose maximum keeps creeping up; beta 0.75 keeps drifts quiet (0 on
    # 1M, 2 seeds) but it is slow (delay 4,000-12,000). River's EDDM warning flag can latch
    # on for the rest of a stream (986,866 warning samples on one 1M run), so alpha = beta:
    # no warning zone.
    "eddm": {"warm_start": 1000, "alpha": 0.75, "beta": 0.75},
    # Defaults (alpha=0.9999 forgetting, delta 0.005, threshold 50, two-sided) fire ~300
    # times on 1M Gaussian samples: with forgetting the cumulative sum has a stationary
    # spread of ~70 sd, above any useful threshold. No forgetting, one-sided, and
    # delta / threshold in sd units (input scaled) give 0 on 1M over 3 seeds.
    "page_hinkley": {"mode": "up", "alpha": 1.0, "delta": 0.1, "threshold": 100.0},
}

#: The default set: calibrated and fast (>1M updates/s) and quick to detect.
DEFAULT_CLASSIFICATION = ("adwin",)
DEFAULT_REGRESSION = ("adwin",)

_SCALED = frozenset({"page_hinkley"})


@dataclass(frozen=True, slots=True)
class Change:
    """A drift, or the start of a warning run, at ``index`` in the block given to update()."""

    index: int
    severity: str  # "drift" or "warning"
    mean_before: float  # mean input since the detector's last reset, before this point


def make_river(name: str, params: Mapping[str, Any] | None = None, defaults: bool = True) -> Any:
    """A River detector by driftwire name; ``defaults=False`` uses River's own defaults."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown sequential detector {name!r}; known: {sorted(_FACTORIES)}")
    kwargs = dict(DEFAULT_PARAMS[name]) if defaults else {}
    kwargs.update(params or {})
    return _FACTORIES[name](**kwargs)


class SequentialDetector:
    """One River detector watching an error or loss stream for a rise.

    Parameters
    ----------
    name
        ``ddm``, ``eddm``, ``hddma``, ``hddmw``, ``fhddm``, ``adwin`` or ``page_hinkley``.
    params
        Overrides of :data:`DEFAULT_PARAMS` (River keyword arguments).
    binary
        True when the inputs are 0/1 error bits; detectors in :data:`BINARY_ONLY` need it.
    scale_warmup
        Values used to learn the scale for PageHinkley (and ADWIN on losses).
    """

    def __init__(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        binary: bool = True,
        scale_warmup: int = 1000,
    ) -> None:
        if name in BINARY_ONLY and not binary:
            raise ValueError(f"{name} needs 0/1 error bits; use adwin or page_hinkley on losses")
        self.name = name
        self.params = dict(params or {})
        self.flip = name == "fhddm"  # FHDDM flags a drop in mean: feed 1 = correct
        self.scaled = name in _SCALED or (name == "adwin" and not binary)
        self.scale_warmup = scale_warmup
        self.detector_ = make_river(name, self.params)
        self.scale_: float | None = None if self.scaled else 1.0
        self._warm: list[float] = []
        self.n_ = 0  # inputs fed since the last reset
        self.total_ = 0.0  # their sum (unscaled), for the mean before a change
        self.in_warning_ = False
        self.drifts_ = 0

    def update(self, values: np.ndarray) -> list[Change]:
        """Feed a block of values in order; returns drifts and warning starts within it."""
        values = np.asarray(values, dtype=np.float64)
        start = 0
        if self.scale_ is None:
            start = self._learn_scale(values)
            if self.scale_ is None:
                return []
        block = values[start:]
        fed = block / self.scale_ if self.scale_ != 1.0 else block
        if self.flip:
            fed = 1.0 - fed
        return self._feed(fed.tolist(), block, start)

    def _feed(self, fed: list[float], raw: np.ndarray, offset: int) -> list[Change]:
        changes: list[Change] = []
        det = self.detector_
        update = det.update
        warns = hasattr(det, "warning_detected")  # ADWIN and PageHinkley have no warning zone
        last = 0
        for i, x in enumerate(fed):
            update(x)
            if det.drift_detected:
                before = self._mean_before(raw, last, i)
                # ADWIN is two-sided: a model getting better is not an alert (restart anyway)
                if not (self.name == "adwin" and det.estimation * self.scale_ <= before):
                    changes.append(Change(offset + i, "drift", before))
                    self.drifts_ += 1
                self.detector_ = det = make_river(self.name, self.params)
                update = det.update
                self.n_, self.total_, last = 0, 0.0, i + 1
                self.in_warning_ = False
            elif warns and det.warning_detected != self.in_warning_:
                self.in_warning_ = not self.in_warning_
                if self.in_warning_:
                    changes.append(Change(offset + i, "warning", self._mean_before(raw, last, i)))
        self.n_ += len(fed) - last
        self.total_ += float(raw[last:].sum())
        return changes

    def _mean_before(self, raw: np.ndarray, last: int, i: int) -> float:
        n = self.n_ + i - last
        return (self.total_ + float(raw[last:i].sum())) / n if n else math.nan

    def _learn_scale(self, values: np.ndarray) -> int:
        need = self.scale_warmup - len(self._warm)
        self._warm.extend(values[:need].tolist())
        if len(self._warm) >= self.scale_warmup:
            sd = float(np.std(self._warm))
            self.scale_ = sd if sd > 0 else 1.0
            self._warm = []
            log.debug("%s: learned input scale %.6g", self.name, self.scale_)
        return min(max(need, 0), len(values))
