"""Gradual drift: a River change detector per feature, fed that feature's per-window drift
score, so a slow drift that no single window's test crosses still raises an alarm.

The score is the probit of the window's (uncorrected) test p-value, z = Phi^-1(1 - p):
N(0, 1) when nothing drifts, for KS and chi-square alike, so one calibration fits all
features. PageHinkley (mode "up") accumulates z - mean - delta; with delta = 0.5 the
stationary walk drifts down by 0.5 sd a step and an excursion above `threshold` has
probability ~exp(-2 * 0.5 * threshold) = exp(-15) ~ 3e-7 per window and feature at the
default 15: ~0.006 false alarms in 1,000 windows x 20 features. River's defaults
(delta=0.005, threshold=50, min_instances=30) assume a different scale and fire hundreds of
times on stationary input (see ANCHORS.md).

>>> import numpy as np
>>> from driftwire.detectors.config import GradualConfig
>>> det = GradualDetector(GradualConfig())
>>> rng = np.random.default_rng(0)
>>> quiet = [det.update(z) for z in rng.normal(size=200)]
>>> rising = [det.update(z) for z in rng.normal(size=50) + np.linspace(0, 5, 50)]
>>> any(quiet), any(rising)
(False, True)
"""

from __future__ import annotations

from driftwire.detectors.config import GradualConfig
from river import drift


class GradualDetector:
    """One feature's change detector over its per-window drift scores."""

    def __init__(self, config: GradualConfig) -> None:
        self.config = config
        self.windows_seen_ = 0
        self.detector_ = self._new()

    def _new(self) -> drift.PageHinkley | drift.ADWIN:
        if self.config.detector == "adwin":
            return drift.ADWIN(
                delta=self.config.adwin_delta, clock=1, grace_period=self.config.min_windows
            )
        return drift.PageHinkley(
            min_instances=self.config.min_windows,
            delta=self.config.delta,
            threshold=self.config.threshold,
            mode="up",
        )

    def update(self, score: float) -> bool:
        """Feed one window's score; True when a change is detected at this window."""
        self.windows_seen_ += 1
        self.detector_.update(float(score))
        return bool(self.detector_.drift_detected)

    @property
    def statistic(self) -> float:
        """PageHinkley's cumulative sum above its minimum (0 for ADWIN)."""
        det = self.detector_
        if isinstance(det, drift.PageHinkley):
            return float(det._sum_increase - det._min_increase)
        return 0.0
