"""Alert events and their lifecycle: firing after K breached windows, resolved after M clean ones.

Every test the engine runs on a closed window yields a :class:`Verdict`. The
:class:`AlertLifecycle` turns the stream of verdicts for one key
(kind, detector, feature, segment) into :class:`Alert` events with hysteresis and
a cooldown, so a drift that persists for 50 windows is one firing alert and one
resolved alert, not 50 alerts.

>>> from driftwire.detectors.alerts import AlertLifecycle, AlertPolicy, Verdict, AlertKind
>>> life = AlertLifecycle(AlertPolicy(fire_after=2, resolve_after=1), "fraud", "ref-1")
>>> def v(start, breached):
...     return Verdict(kind=AlertKind.DATA_DRIFT, detector="psi", feature="amount",
...                    statistic="psi", value=0.3 if breached else 0.01, threshold=0.2,
...                    breached=breached, window_start=start, window_end=start + 60_000,
...                    window_count=1000)
>>> [a.status.value for s, b in [(0, True), (60_000, True), (120_000, False)]
...  for a in life.observe(v(s, b))]
['firing', 'resolved']
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum


class AlertKind(StrEnum):
    DATA_DRIFT = "data_drift"
    PREDICTION_DRIFT = "prediction_drift"
    CONCEPT_DRIFT = "concept_drift"
    DATA_QUALITY = "data_quality"
    VOLUME = "volume"
    SILENCE = "silence"
    LATENCY = "latency"
    LIFECYCLE = "lifecycle"
    SHADOW_DIVERGENCE = "shadow_divergence"


class Status(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Evidence:
    """Reference vs current summaries, so a subscriber can act without re-querying."""

    reference: dict[str, float] = field(default_factory=dict)
    current: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Summaries such as mean/std come from float sums whose rounding depends on how the
        # events were cut into batches or partitions; 10 significant digits keep an alert
        # event identical live, replayed, split or restored.
        object.__setattr__(self, "reference", _rounded(self.reference))
        object.__setattr__(self, "current", _rounded(self.current))


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.10g}") for k, v in values.items()}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one test on one closed window (or one sequential-detector step)."""

    kind: AlertKind
    detector: str
    statistic: str
    value: float
    threshold: float
    breached: bool
    window_start: int
    window_end: int
    window_count: int
    feature: str | None = None
    segment: str | None = None
    p_value: float | None = None
    severity: Severity = Severity.WARNING
    evidence: Evidence = field(default_factory=Evidence)
    provisional: bool = False

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind.value, self.detector, self.feature or "", self.segment or "")


@dataclass(frozen=True, slots=True)
class Alert:
    """One event on the alerts topic; mirrors the `DriftAlert` Avro schema."""

    alert_id: str
    model_id: str
    kind: AlertKind
    detector: str
    status: Status
    severity: Severity
    statistic: str
    value: float
    threshold: float
    window_start: int
    window_end: int
    window_count: int
    reference_id: str
    feature: str | None = None
    segment: str | None = None
    p_value: float | None = None
    model_version: str | None = None
    provisional: bool = False
    partitions_reported: int | None = None
    evidence: Evidence = field(default_factory=Evidence)


def make_alert_id(
    model_id: str,
    kind: str,
    detector: str,
    feature: str | None,
    segment: str | None,
    window_start: int,
    status: str,
) -> str:
    """Deterministic id: a replay or a retry of the same window yields the same id."""
    parts = [model_id, kind, detector, feature or "", segment or "", str(window_start), status]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def alert_from_verdict(
    verdict: Verdict,
    status: Status,
    model_id: str,
    reference_id: str,
    model_version: str | None = None,
) -> Alert:
    return Alert(
        alert_id=make_alert_id(
            model_id,
            verdict.kind.value,
            verdict.detector,
            verdict.feature,
            verdict.segment,
            verdict.window_start,
            status.value,
        ),
        model_id=model_id,
        kind=verdict.kind,
        detector=verdict.detector,
        status=status,
        severity=verdict.severity if status is Status.FIRING else Severity.INFO,
        statistic=verdict.statistic,
        value=verdict.value,
        threshold=verdict.threshold,
        window_start=verdict.window_start,
        window_end=verdict.window_end,
        window_count=verdict.window_count,
        reference_id=reference_id,
        feature=verdict.feature,
        segment=verdict.segment,
        p_value=verdict.p_value,
        model_version=model_version,
        provisional=verdict.provisional,
        evidence=verdict.evidence,
    )


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """Hysteresis: fire after `fire_after` breached windows in a row, resolve after
    `resolve_after` clean ones; once resolved, stay quiet for `cooldown` windows."""

    fire_after: int = 1
    resolve_after: int = 3
    cooldown: int = 0

    def __post_init__(self) -> None:
        if self.fire_after < 1 or self.resolve_after < 1 or self.cooldown < 0:
            raise ValueError(
                "alert policy: fire_after and resolve_after must be >= 1, cooldown >= 0"
            )


@dataclass(slots=True)
class _KeyState:
    breached_streak: int = 0
    clean_streak: int = 0
    firing: bool = False
    cooldown_left: int = 0


class AlertLifecycle:
    """Per-key hysteresis state machine. Picklable; part of a monitor's snapshot."""

    def __init__(
        self,
        policy: AlertPolicy,
        model_id: str,
        reference_id: str,
        model_version: str | None = None,
    ) -> None:
        self.policy = policy
        self.model_id = model_id
        self.reference_id = reference_id
        self.model_version = model_version
        self.states_: dict[tuple[str, str, str, str], _KeyState] = {}

    def observe(self, verdict: Verdict) -> list[Alert]:
        """Feed one verdict; returns the alert events (zero or one) it causes."""
        state = self.states_.setdefault(verdict.key, _KeyState())
        if verdict.breached:
            state.breached_streak += 1
            state.clean_streak = 0
        else:
            state.clean_streak += 1
            state.breached_streak = 0
        if state.cooldown_left > 0:
            state.cooldown_left -= 1
            return []
        if not state.firing and state.breached_streak >= self.policy.fire_after:
            state.firing = True
            return [self._emit(verdict, Status.FIRING)]
        if state.firing and state.clean_streak >= self.policy.resolve_after:
            state.firing = False
            state.cooldown_left = self.policy.cooldown
            return [self._emit(verdict, Status.RESOLVED)]
        return []

    def is_firing(self, key: tuple[str, str, str, str]) -> bool:
        state = self.states_.get(key)
        return bool(state and state.firing)

    def _emit(self, verdict: Verdict, status: Status) -> Alert:
        return alert_from_verdict(
            verdict, status, self.model_id, self.reference_id, self.model_version
        )
