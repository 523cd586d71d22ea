"""Score alerts against known change points, beside trivial baselines.

A :class:`ChangePoint` says that from event time ``at`` a model changed (optionally
only one ``kind`` of alert and one ``feature`` can see it). A firing alert *matches* a
change point when model, kind and feature agree (``None`` in the change point matches
anything) and its window ends after ``at`` and starts before the change's horizon (the
next change point of the same scope, the end of the data, or ``at + max_delay_ms``).

- the first matching alert detects the change: delay = its window end - ``at`` (an alert
  exists only once its window closed), in ms and in events of that model;
- a firing alert that matches no change point is a false alarm; rates are per 1,000
  windows tested and as mean time between false alarms (MTBFA);
- the same scores for an always-firing detector (one alarm per window for every scope of
  the truth) and a never-firing one, computed on the same windows, so that a detector
  that alerts everywhere cannot look good.

>>> from driftwire.detectors.scoring import Alarm, ChangePoint, Window, score_with_baselines
>>> windows = [Window("m", s, s + 10) for s in range(0, 100, 10)]
>>> truth = [ChangePoint("m", at=50, feature="x")]
>>> card = score_with_baselines([Alarm("m", "data_drift", "x", 50, 60)], truth, windows)
>>> card.detector.found, card.detector.detections[0].delay_ms, card.detector.false_alarms
(1, 10, 0)
>>> card.always.false_alarms, card.never.found
(5, 0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np


def parse_time_ms(value: Any) -> int:
    """Epoch milliseconds from an int/float of ms or an ISO-8601 string (UTC if naive)."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    else:
        raise ValueError(f"not a time: {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """Ground truth: `model` changed at `at` (epoch ms); None kind/feature = any."""

    model: str
    at: int
    kind: str | None = None
    feature: str | None = None
    label: str = ""

    @property
    def scope(self) -> tuple[str, str | None, str | None]:
        return (self.model, self.kind, self.feature)

    def matches(self, alarm: AlarmLike) -> bool:
        return (
            alarm.model_id == self.model
            and (self.kind is None or str(alarm.kind) == self.kind)
            and (self.feature is None or alarm.feature == self.feature)
        )

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> ChangePoint:
        """From a truth-file entry ``{model, at, kind?, feature?, label?}``."""
        return cls(
            model=str(spec["model"]),
            at=parse_time_ms(spec["at"]),
            kind=spec.get("kind"),
            feature=spec.get("feature"),
            label=str(spec.get("label") or ""),
        )


def change_points_from_records(records: Iterable[Mapping[str, Any]]) -> list[ChangePoint]:
    return sorted((ChangePoint.from_mapping(r) for r in records), key=lambda c: (c.at, c.model))


class AlarmLike(Protocol):
    """What scoring reads from an alert (driftwire's `Alert` has all of it)."""

    @property
    def model_id(self) -> str: ...
    @property
    def kind(self) -> Any: ...
    @property
    def feature(self) -> str | None: ...
    @property
    def window_start(self) -> int: ...
    @property
    def window_end(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Alarm:
    """A firing alarm reduced to what scoring needs (baselines are made of these)."""

    model_id: str
    kind: str
    feature: str | None
    window_start: int
    window_end: int
    alert_id: str = ""


@dataclass(frozen=True, slots=True)
class Window:
    """One window the engine tested for `model` (start inclusive, end exclusive)."""

    model: str
    start: int
    end: int
    count: int = 0


@dataclass(frozen=True, slots=True)
class Detection:
    change: ChangePoint
    detected_at: int | None = None  # window end of the first matching alert
    delay_ms: int | None = None
    delay_events: int | None = None
    alert_id: str = ""

    @property
    def found(self) -> bool:
        return self.detected_at is not None


@dataclass(frozen=True, slots=True)
class Score:
    """Detection and false-alarm figures of one detector on one replay."""

    name: str
    detections: list[Detection]
    alarms: int
    false_alarms: int
    windows: int
    span_ms: int

    @property
    def found(self) -> int:
        return sum(d.found for d in self.detections)

    @property
    def missed(self) -> int:
        return len(self.detections) - self.found

    @property
    def recall(self) -> float | None:
        return self.found / len(self.detections) if self.detections else None

    @property
    def mean_delay_ms(self) -> float | None:
        delays = [d.delay_ms for d in self.detections if d.delay_ms is not None]
        return float(np.mean(delays)) if delays else None

    @property
    def mean_delay_events(self) -> float | None:
        delays = [d.delay_events for d in self.detections if d.delay_events is not None]
        return float(np.mean(delays)) if delays else None

    @property
    def false_alarms_per_1000_windows(self) -> float | None:
        return 1000.0 * self.false_alarms / self.windows if self.windows else None

    @property
    def mtbfa_ms(self) -> float:
        """Mean event time between false alarms; infinite when there were none."""
        return self.span_ms / self.false_alarms if self.false_alarms else math.inf

    @property
    def mtbfa_windows(self) -> float:
        return self.windows / self.false_alarms if self.false_alarms else math.inf

    def summary(self) -> dict[str, Any]:
        """Plain figures (JSON-ready; infinities become None)."""

        def finite(x: float | None) -> float | None:
            return None if x is None or math.isinf(x) else x

        return {
            "name": self.name,
            "changes": len(self.detections),
            "found": self.found,
            "missed": self.missed,
            "recall": self.recall,
            "mean_delay_ms": self.mean_delay_ms,
            "mean_delay_events": self.mean_delay_events,
            "alarms": self.alarms,
            "false_alarms": self.false_alarms,
            "windows": self.windows,
            "false_alarms_per_1000_windows": self.false_alarms_per_1000_windows,
            "mtbfa_ms": finite(self.mtbfa_ms),
            "mtbfa_windows": finite(self.mtbfa_windows),
        }


@dataclass(frozen=True, slots=True)
class ScoreCard:
    """A detector's score beside the always-firing and never-firing baselines."""

    detector: Score
    always: Score
    never: Score
    extra: dict[str, Any] = field(default_factory=dict)

    def scores(self) -> list[Score]:
        return [self.detector, self.always, self.never]


def score_alerts(
    alarms: Sequence[AlarmLike],
    changes: Sequence[ChangePoint],
    windows: Sequence[Window],
    event_times: Mapping[str, np.ndarray] | None = None,
    *,
    name: str = "detector",
    max_delay_ms: int | None = None,
) -> Score:
    """Match firing `alarms` to `changes`; see the module docstring for the rules.

    Alerts whose ``status`` is not ``firing`` (resolved events) are ignored.

    `event_times` (per model, sorted int64 ms) gives delays in events; without it they are
    estimated from the window counts.
    """
    alarms = [a for a in alarms if str(getattr(a, "status", "firing")) == "firing"]
    end_of_data = max((w.end for w in windows), default=0)
    horizons = _horizons(changes, end_of_data, max_delay_ms)
    ordered = sorted(alarms, key=lambda a: (a.window_end, a.window_start))
    first: dict[int, AlarmLike] = {}
    false_alarms = 0
    for alarm in ordered:
        hits = [
            i
            for i, change in enumerate(changes)
            if change.matches(alarm)
            and alarm.window_end > change.at
            and alarm.window_start < horizons[i]
        ]
        if not hits:
            false_alarms += 1
        for i in hits:
            first.setdefault(i, alarm)
    counter = _EventCounter(windows, event_times)
    detections = [_detection(change, first.get(i), counter) for i, change in enumerate(changes)]
    return Score(
        name=name,
        detections=detections,
        alarms=len(alarms),
        false_alarms=false_alarms,
        windows=len(windows),
        span_ms=sum(w.end - w.start for w in windows),
    )


def always_firing(changes: Sequence[ChangePoint], windows: Sequence[Window]) -> list[Alarm]:
    """One alarm per window for every (kind, feature) scope the truth names for its model."""
    scopes = sorted({c.scope for c in changes}, key=lambda s: (s[0], s[1] or "", s[2] or ""))
    return [
        Alarm(w.model, kind or "any", feature, w.start, w.end)
        for w in windows
        for model, kind, feature in scopes
        if model == w.model
    ]


def score_with_baselines(
    alarms: Sequence[AlarmLike],
    changes: Sequence[ChangePoint],
    windows: Sequence[Window],
    event_times: Mapping[str, np.ndarray] | None = None,
    *,
    max_delay_ms: int | None = None,
) -> ScoreCard:
    def run(found: Sequence[AlarmLike], name: str) -> Score:
        return score_alerts(
            found, changes, windows, event_times, name=name, max_delay_ms=max_delay_ms
        )

    return ScoreCard(
        detector=run(alarms, "detector"),
        always=run(always_firing(changes, windows), "always-firing"),
        never=run([], "never-firing"),
    )


def _horizons(
    changes: Sequence[ChangePoint], end_of_data: int, max_delay_ms: int | None
) -> list[int]:
    """Where each change stops being the explanation for an alert of its scope."""
    horizons = []
    for change in changes:
        later = [c.at for c in changes if c.scope == change.scope and c.at > change.at]
        end = min(later, default=max(end_of_data, change.at + 1))
        if max_delay_ms is not None:
            end = min(end, change.at + max_delay_ms)
        horizons.append(end)
    return horizons


class _EventCounter:
    """Counts a model's events in [start, end): exactly from event times, else from windows."""

    def __init__(
        self, windows: Sequence[Window], event_times: Mapping[str, np.ndarray] | None
    ) -> None:
        self.event_times = event_times or {}
        self.windows: dict[str, list[Window]] = {}
        for w in windows:
            self.windows.setdefault(w.model, []).append(w)

    def between(self, model: str, start: int, end: int) -> int:
        times = self.event_times.get(model)
        if times is not None:
            lo, hi = np.searchsorted(times, [start, end], side="left")
            return int(hi - lo)
        # Without raw times assume events spread evenly inside each window.
        total = 0.0
        for w in self.windows.get(model, []):
            overlap = min(end, w.end) - max(start, w.start)
            if overlap > 0 and w.end > w.start:
                total += w.count * overlap / (w.end - w.start)
        return round(total)


def _detection(change: ChangePoint, alarm: AlarmLike | None, counter: _EventCounter) -> Detection:
    if alarm is None:
        return Detection(change)
    detected_at = int(alarm.window_end)
    return Detection(
        change=change,
        detected_at=detected_at,
        delay_ms=detected_at - change.at,
        delay_events=counter.between(change.model, change.at, detected_at),
        alert_id=str(getattr(alarm, "alert_id", "")),
    )
