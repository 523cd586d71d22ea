"""Traffic volume per window, and silence: the signals a feature histogram cannot show.

:class:`VolumeDetector` compares each closed window's event count with what was expected
(seasonal hour-of-week median, else the reference rate, else the warm-up windows' mean) and
with the median of recent normal windows; see :class:`~driftwire.detectors.config.VolumeConfig`.

:class:`SilenceDetector` needs no event to fire: it is asked at every watermark, and the
watermark moves with the *other* models' (or partitions') traffic or a heartbeat.

>>> from driftwire.detectors.config import VolumeConfig
>>> det = VolumeDetector(VolumeConfig(), reference_rate=1.0)  # 1 event per ms
>>> [(v.breached, round(v.value, 2)) for v in (det.update(60_000, 0, 60_000),
...                                             det.update(29_000, 60_000, 120_000))]
[(False, 1.0), (True, 0.48)]
>>> silence = SilenceDetector(silence_after=30_000)
>>> silence.observe(119_990)
>>> silence.check(140_000), [v.breached for v in silence.check(150_000)]
([], [True])
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from driftwire.detectors.alerts import AlertKind, Evidence, Severity, Verdict
from driftwire.detectors.config import VolumeConfig
from scipy.stats import poisson

HOUR_MS = 3_600_000
WEEK_HOURS = 168
#: Seasonal history kept per hour-of-week bucket (bounded memory: 168 x this many rates).
SEASONAL_KEEP = 64


def hour_of_week(t_ms: int) -> int:
    return (t_ms // HOUR_MS) % WEEK_HOURS


class VolumeDetector:
    """Per-window event count vs expectation; one instance per model (or segment).

    State: warm-up counts, a rolling window of recent normal rates, and per hour of week the
    (week, rate) pairs of normal windows. Rates are events per ms so windows of any span
    (carried-forward ones included) compare.
    """

    def __init__(self, config: VolumeConfig, reference_rate: float | None = None) -> None:
        self.config = config
        self.reference_rate = reference_rate if reference_rate and reference_rate > 0 else None
        self.warmup_: list[float] = []
        self.recent_: deque[float] = deque(maxlen=config.history)
        self.seasonal_: dict[int, deque[tuple[int, float]]] = {}

    def update(self, count: int, start: int, end: int, segment: str | None = None) -> Verdict:
        """The verdict for one closed window of `count` events over [start, end)."""
        span = max(end - start, 1)
        expected_rate, basis = self._expected_rate(start)
        rate = count / span
        # the seasonal profile learns from every window (a median over weeks shrugs off one
        # bad week); the rolling baseline only from normal ones, so a drop never becomes it
        self._remember_season(rate, start)
        if expected_rate is None:  # still warming up: learn, never alarm
            self.warmup_.append(rate)
            self.recent_.append(rate)
            return self._verdict(count, start, end, segment, math.nan, False, basis, None)
        expected = expected_rate * span
        ratio = count / expected if expected > 0 else math.inf
        breached = self._off(count, expected)
        recent = float(np.median(self.recent_)) * span if self.recent_ else None
        if recent is not None and recent > 0:
            breached = breached and self._off(count, recent)
        if not breached:
            self.recent_.append(rate)
        return self._verdict(count, start, end, segment, ratio, breached, basis, recent)

    def _off(self, count: int, expected: float) -> bool:
        """Beyond the factor and unlikely under Poisson(expected)."""
        cfg = self.config
        if count < cfg.drop_factor * expected:
            return bool(poisson.cdf(count, expected) < cfg.alpha)
        if count > cfg.spike_factor * expected:
            return bool(poisson.sf(count - 1, expected) < cfg.alpha)
        return False

    def _expected_rate(self, start: int) -> tuple[float | None, str]:
        history = self.seasonal_.get(hour_of_week(start))
        if history and len({week for week, _ in history}) >= self.config.seasonal_weeks:
            return float(np.median([rate for _, rate in history])), "seasonal"
        if self.reference_rate is not None:
            return self.reference_rate, "reference"
        if len(self.warmup_) >= self.config.warmup_windows:
            return float(np.mean(self.warmup_)), "warmup"
        return None, "warmup"

    def _remember_season(self, rate: float, start: int) -> None:
        bucket = self.seasonal_.setdefault(hour_of_week(start), deque(maxlen=SEASONAL_KEEP))
        bucket.append((start // (HOUR_MS * WEEK_HOURS), rate))

    def _verdict(
        self,
        count: int,
        start: int,
        end: int,
        segment: str | None,
        ratio: float,
        breached: bool,
        basis: str,
        recent: float | None,
    ) -> Verdict:
        cfg = self.config
        expected = count / ratio if ratio and math.isfinite(ratio) else math.nan
        reference = {"expected_count": expected}
        if recent is not None:
            reference["recent_median_count"] = recent
        drop = math.isfinite(ratio) and ratio < 1
        severe = math.isfinite(ratio) and (
            ratio < cfg.drop_factor / 2 or ratio > 2 * cfg.spike_factor
        )
        return Verdict(
            kind=AlertKind.VOLUME,
            detector="volume",
            statistic="count_ratio",
            value=float(ratio),
            threshold=cfg.drop_factor if drop else cfg.spike_factor,
            breached=breached,
            window_start=start,
            window_end=end,
            window_count=count,
            segment=segment,
            severity=Severity.CRITICAL if breached and severe else Severity.WARNING,
            evidence=Evidence(
                reference={k: float(v) for k, v in reference.items() if math.isfinite(v)},
                current={"count": float(count)},
                notes={"expected_from": basis, "direction": "drop" if drop else "spike"},
            ),
        )


@dataclass
class SilenceDetector:
    """A model that should be live and sent nothing for `silence_after` ms of event time.

    `observe` the latest event time seen; `check` at every watermark. One firing verdict per
    silent spell (window_start = the last event time, so a replay gives the same alert id),
    one clean verdict when traffic returns. Before any event, silence counts from the first
    watermark seen: a configured model that never sends is silent too.
    """

    silence_after: int
    last_event_time_: int | None = None
    first_watermark_: int | None = None
    silent_since_: int | None = None  # the last event time of the current silent spell
    last_watermark_: int | None = None

    def observe(self, last_event_time: int) -> None:
        if self.last_event_time_ is None or last_event_time > self.last_event_time_:
            self.last_event_time_ = last_event_time

    def check(self, watermark: int) -> list[Verdict]:
        """Verdicts that change the state: [] while nothing changes."""
        if self.first_watermark_ is None:
            self.first_watermark_ = watermark
        self.last_watermark_ = watermark
        since = (
            self.last_event_time_ if self.last_event_time_ is not None else self.first_watermark_
        )
        if self.silent_since_ is not None:
            if since > self.silent_since_:  # traffic came back
                spell, self.silent_since_ = self.silent_since_, None
                return [self._verdict(spell, watermark, False)]
            return []
        if watermark - since >= self.silence_after:
            self.silent_since_ = since
            return [self._verdict(since, watermark, True)]
        return []

    def _verdict(self, since: int, watermark: int, breached: bool) -> Verdict:
        return Verdict(
            kind=AlertKind.SILENCE,
            detector="silence",
            statistic="silent_ms",
            value=float(watermark - since),
            threshold=float(self.silence_after),
            breached=breached,
            window_start=since,
            window_end=watermark,
            window_count=0,
            severity=Severity.CRITICAL,
            evidence=Evidence(
                current={"watermark": float(watermark)},
                notes={"last_event_time": str(self.last_event_time_)},
            ),
        )
