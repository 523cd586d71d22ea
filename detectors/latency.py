"""Inference latency: a mergeable log-bucketed sketch and the per-window latency checks.

A :class:`LatencySketch` counts latencies in buckets whose bounds grow geometrically by
``gamma = (1 + a) / (1 - a)`` (a = `RELATIVE_ACCURACY`), so any quantile it reports is within a
relative error ``a`` of a value that the exact quantile's rank holds (the DDSketch idea,
fixed layout). The bucket layout is a module constant, never configured: every worker builds
the same array, so sketches from any split of the traffic merge by adding counts.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> a, b = rng.lognormal(3.7, 0.4, 5_000), rng.lognormal(3.7, 0.4, 5_000)
>>> sketch = LatencySketch.from_values(a).merge(LatencySketch.from_values(b))
>>> exact = np.quantile(np.concatenate([a, b]), 0.99, method="inverted_cdf")
>>> bool(abs(sketch.quantile(0.99) / exact - 1) <= RELATIVE_ACCURACY)
True

:class:`LatencyDetector` turns one window's sketch into verdicts: an SLO breach (a quantile
above its configured limit) and a shift against the reference (the share of the window above
the reference's p99 bucket is tested against the reference's own share with a one-sided
binomial test, and the quantile must also have grown by `shift_factor`, so a huge window does
not alarm on a 2% change).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from driftwire.detectors.alerts import AlertKind, Evidence, Severity, Verdict
from driftwire.detectors.config import LatencyConfig
from scipy.stats import binom

#: Quantiles are within this relative error (1%) of a true order statistic.
RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
#: Range covered by the inner buckets; smaller/larger values go to the two edge buckets.
MIN_MS = 0.01
MAX_MS = 1e7
_LOG_GAMMA = math.log(GAMMA)
_K_MIN = math.ceil(math.log(MIN_MS) / _LOG_GAMMA)
_K_MAX = math.ceil(math.log(MAX_MS) / _LOG_GAMMA)
#: Bucket 0 holds values <= MIN_MS (and 0), bucket i > 0 holds (GAMMA**(k-1), GAMMA**k].
N_BUCKETS = _K_MAX - _K_MIN + 2

QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}


def bucket_index(values: np.ndarray) -> np.ndarray:
    """Bucket of each (finite, >= 0) latency."""
    with np.errstate(divide="ignore"):
        k = np.ceil(np.log(np.maximum(values, MIN_MS)) / _LOG_GAMMA).astype(np.int64)
    return np.clip(k - _K_MIN + 1, 0, N_BUCKETS - 1) * (values > MIN_MS)


def bucket_value(index: np.ndarray | int) -> np.ndarray:
    """Representative value of a bucket: within RELATIVE_ACCURACY of every value in it."""
    k = np.asarray(index) + _K_MIN - 1
    return np.where(np.asarray(index) == 0, MIN_MS, 2 * GAMMA**k / (GAMMA + 1))


@dataclass
class LatencySketch:
    """Counts of latencies per log bucket; `merge` adds, so it splits over partitions."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(N_BUCKETS, dtype=np.int64))

    @classmethod
    def from_values(cls, values: np.ndarray) -> LatencySketch:
        """Sketch of the finite, non-negative values (NaN = not reported, ignored)."""
        values = np.asarray(values, dtype=np.float64)
        ok = values[np.isfinite(values) & (values >= 0)]
        return cls(np.bincount(bucket_index(ok), minlength=N_BUCKETS).astype(np.int64))

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: LatencySketch) -> LatencySketch:
        return LatencySketch(self.counts + other.counts)

    def quantile(self, q: float) -> float:
        """The value at rank ceil(q * n) (the 'inverted_cdf' quantile), NaN when empty."""
        n = self.count
        if n == 0:
            return math.nan
        rank = max(math.ceil(q * n), 1)
        return float(bucket_value(int(np.searchsorted(np.cumsum(self.counts), rank))))

    def bucket_of_quantile(self, q: float) -> int:
        rank = max(math.ceil(q * self.count), 1)
        return int(np.searchsorted(np.cumsum(self.counts), rank))

    def share_above(self, bucket: int) -> tuple[int, float]:
        """(count, share) of values in buckets above `bucket`."""
        above = int(self.counts[bucket + 1 :].sum())
        return above, above / self.count if self.count else 0.0

    def to_sparse(self) -> tuple[list[int], list[int]]:
        """(bucket indices, counts) of the non-empty buckets: the wire form."""
        idx = np.flatnonzero(self.counts)
        return idx.tolist(), self.counts[idx].tolist()

    @classmethod
    def from_sparse(cls, index: list[int], counts: list[int]) -> LatencySketch:
        dense = np.zeros(N_BUCKETS, dtype=np.int64)
        dense[np.asarray(index, dtype=np.int64)] = np.asarray(counts, dtype=np.int64)
        return cls(dense)


class LatencyDetector:
    """SLO and shift checks on each closed window's latency sketch.

    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> det = LatencyDetector(LatencyConfig(slo_ms={"p99": 100.0}),
    ...                       LatencySketch.from_values(rng.normal(40, 3, 20_000)))
    >>> slow = LatencySketch.from_values(rng.normal(120, 5, 2_000))
    >>> [(v.detector, v.breached) for v in det.update(slow, 0, 60_000)]
    [('latency_slo', True), ('latency_shift', True)]
    """

    def __init__(self, config: LatencyConfig, reference: LatencySketch | None = None) -> None:
        self.config = config
        self.reference_ = reference if reference is not None and reference.count else None
        self.warmup_ = LatencySketch()
        self.warmup_seen_ = 0

    def update(
        self, sketch: LatencySketch, start: int, end: int, segment: str | None = None
    ) -> list[Verdict]:
        """Verdicts for one window; windows with too few latencies yield none."""
        cfg = self.config
        if sketch.count < cfg.min_count:
            return []
        current = {name: sketch.quantile(q) for name, q in QUANTILES.items()}
        out = [self._slo(name, limit, current, sketch, start, end, segment)
               for name, limit in sorted(cfg.slo_ms.items())]  # fmt: skip
        if self.reference_ is None:
            self._learn(sketch)
        else:
            out.append(self._shift(sketch, current, start, end, segment))
        return out

    def _learn(self, sketch: LatencySketch) -> None:
        self.warmup_ = self.warmup_.merge(sketch)
        self.warmup_seen_ += 1
        if self.warmup_seen_ >= self.config.warmup_windows:
            self.reference_ = self.warmup_

    def _slo(
        self,
        name: str,
        limit: float,
        current: dict[str, float],
        sketch: LatencySketch,
        start: int,
        end: int,
        segment: str | None,
    ) -> Verdict:
        value = current[name]
        return Verdict(
            kind=AlertKind.LATENCY,
            detector="latency_slo",
            statistic=f"{name}_ms",
            value=value,
            threshold=float(limit),
            breached=bool(value > limit),
            window_start=start,
            window_end=end,
            window_count=sketch.count,
            feature=name,
            segment=segment,
            severity=Severity.CRITICAL if value > 2 * limit else Severity.WARNING,
            evidence=Evidence(current=current),
        )

    def _shift(
        self,
        sketch: LatencySketch,
        current: dict[str, float],
        start: int,
        end: int,
        segment: str | None,
    ) -> Verdict:
        cfg, ref = self.config, self.reference_
        assert ref is not None
        name = cfg.shift_quantile
        q = QUANTILES[name]
        bucket = ref.bucket_of_quantile(q)
        _, p0 = ref.share_above(bucket)
        p0 = max(p0, 1.0 / (ref.count + 1))  # a reference with nothing above: one pseudo-count
        above, share = sketch.share_above(bucket)
        p_value = float(binom.sf(above - 1, sketch.count, p0))
        ref_q = ref.quantile(q)
        ratio = current[name] / ref_q if ref_q > 0 else math.inf
        reference = {n: ref.quantile(x) for n, x in QUANTILES.items()}
        return Verdict(
            kind=AlertKind.LATENCY,
            detector="latency_shift",
            statistic=f"{name}_ratio",
            value=float(ratio),
            threshold=float(cfg.shift_factor),
            breached=bool(ratio >= cfg.shift_factor and p_value < cfg.alpha),
            window_start=start,
            window_end=end,
            window_count=sketch.count,
            feature=name,
            segment=segment,
            p_value=p_value,
            severity=Severity.CRITICAL if ratio >= 2 * cfg.shift_factor else Severity.WARNING,
            evidence=Evidence(
                reference=reference | {"share_above": p0},
                current=current | {"share_above": share},
            ),
        )
