"""Data-quality checks per closed window: missing, out-of-range, unseen-category and
non-finite rates against the limits in `QualityConfig`.

Kept apart from drift on purpose: drift tests see only present, finite values, so a spike of
missing values is a data-quality alert and not a drift alert.

>>> import numpy as np
>>> rates = np.array([0.0, 0.2]); base = np.array([0.0, 0.1])
>>> [(c.column, c.breached) for c in rate_checks("missing_rate", ("a", "b"), rates,
...                                              base + 0.05, 3.0)]
[('a', False), ('b', True)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from driftwire.detectors.alerts import Severity
from driftwire.detectors.config import QualityConfig
from driftwire.detectors.profile import ProfileLayout, WindowProfile


@dataclass(frozen=True)
class QualityCheck:
    """One rate of one column in one window, against its limit."""

    detector: str  # missing_rate | out_of_range_rate | unseen_rate | nonfinite_rate
    column: str
    rate: float
    limit: float
    breached: bool
    severity: Severity


def rate_checks(
    detector: str,
    columns: tuple[str, ...],
    rates: np.ndarray,
    limits: np.ndarray,
    critical_factor: float,
) -> list[QualityCheck]:
    """Critical when the rate is `critical_factor` times its limit or more."""
    return [
        QualityCheck(
            detector=detector,
            column=col,
            rate=float(rate),
            limit=float(limit),
            breached=bool(rate > limit),
            severity=Severity.CRITICAL
            if rate >= critical_factor * limit and limit > 0
            else Severity.WARNING,
        )
        for col, rate, limit in zip(columns, rates, limits, strict=True)
    ]


def _rate(num: np.ndarray, den: np.ndarray | float) -> np.ndarray:
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.shape(num)), where=den > 0)


def quality_checks(
    prof: WindowProfile,
    layout: ProfileLayout,
    reference_missing: np.ndarray,
    config: QualityConfig,
) -> list[QualityCheck]:
    """All checks of one window. `reference_missing` holds the reference's missing rate per
    numeric column then per categorical column (the allowed rate is that plus
    `missing_increase`)."""
    n_num = len(layout.numeric)
    finite = prof.finite_counts(layout) if n_num else np.zeros(0)
    bins_lo = layout.bin_offsets[:-1]
    outside = prof.bins[bins_lo] + prof.bins[layout.bin_offsets[1:] - 1] if n_num else finite
    cat_hi = layout.category_offsets[1:] - 1
    unseen = prof.categories[cat_hi] if len(layout.categorical) else np.zeros(0)
    present = (
        np.add.reduceat(prof.categories, layout.category_offsets[:-1])
        if len(layout.categorical)
        else np.zeros(0)
    )
    columns = layout.numeric + layout.categorical
    factor = config.critical_factor
    return [
        *rate_checks(
            "missing_rate",
            columns,
            _rate(prof.missing, prof.count),
            reference_missing + config.missing_increase,
            factor,
        ),
        *rate_checks(
            "out_of_range_rate",
            layout.numeric,
            _rate(outside, finite),
            np.full(n_num, config.out_of_range),
            factor,
        ),
        *rate_checks(
            "nonfinite_rate",
            layout.numeric,
            _rate(prof.nonfinite, prof.count),
            np.full(n_num, config.nonfinite),
            factor,
        ),
        *rate_checks(
            "unseen_rate",
            layout.categorical,
            _rate(unseen, present),
            np.full(len(layout.categorical), config.unseen),
            factor,
        ),
    ]
