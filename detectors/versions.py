"""Model versions: one `Monitor` per (model, version), roll-outs and retirements as events.

A new version starts against the model's configured reference (or, with
``versions.warmup_reference``, against a reference built from its own first events), so a
roll-out alone never looks like data drift: each version is compared with the baseline, not
with the previous version's traffic. Its roll-out is a ``lifecycle`` alert (status `firing`:
"v7 is live since T"), emitted when the watermark passes the version's first event time; the
matching `resolved` alert is its retirement, once it sent nothing for ``retire_after`` while
a newer version kept sending. For lifecycle alerts `feature` holds the version, so ids differ
per version.

Volume and silence are the model's, not the version's (a roll-out moves traffic between
versions without changing the total), so they run here on the summed counts.

>>> from driftwire.detectors.config import ModelConfig, VersionsConfig, WindowConfig
>>> from driftwire.detectors.generators import StreamSpec, generate, take_events
>>> spec = StreamSpec(n_numeric=3, n_categorical=0, rate=500.0, seed=4)
>>> cfg = ModelConfig(id="fraud", window=WindowConfig(size=10_000, min_count=100),
...                   versions=VersionsConfig(retire_after=20_000))
>>> reg = VersionRegistry(cfg, ReferenceProfile.from_batch(take_events(spec, 5_000), cfg))
>>> alerts = []
>>> for batch in generate(spec, 100_000, batch_size=1_000):
...     batch.model_version = np.where(batch.event_time < 40_000, "v6", "v7").astype(object)
...     alerts += reg.update_features(batch) + reg.advance(int(batch.event_time.max()))
>>> for a in alerts:
...     print(a.kind.value, a.feature, a.status.value, a.window_start, a.evidence.notes["event"])
lifecycle v6 firing 0 rollout
lifecycle v7 firing 40000 rollout
lifecycle v6 resolved 0 retired
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from dataclasses import dataclass

import numpy as np
from driftwire.detectors.alerts import (
    Alert,
    AlertKind,
    AlertLifecycle,
    Evidence,
    Severity,
    Status,
    Verdict,
    alert_from_verdict,
)
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.config import ModelConfig, VersionsConfig
from driftwire.detectors.monitor import Monitor
from driftwire.detectors.profile import WindowProfile
from driftwire.detectors.reference import ReferenceProfile
from driftwire.detectors.volume import SilenceDetector, VolumeDetector
from driftwire.detectors.windows import WindowClock

log = logging.getLogger(__name__)

UNKNOWN_VERSION = ""
SNAPSHOT_MAGIC = b"DWVER1"


@dataclass
class VersionState:
    """What the registry knows of one version besides its monitor."""

    first_seen: int
    last_seen: int
    announced: bool = False
    monitor: Monitor | None = None  # None while a warm-up reference is being collected
    warmup: list[FeatureBatch] = dataclasses.field(default_factory=list)


class VersionRegistry:
    """All versions of one model: routing, lifecycle events, retirement, model-level volume."""

    def __init__(self, config: ModelConfig, reference: ReferenceProfile) -> None:
        self.config = config
        self.reference = reference
        self.versions_config = config.versions or VersionsConfig()
        # versions monitor distributions; volume / silence are watched on the whole model
        self.version_config_ = dataclasses.replace(config, volume=None, versions=None)
        self.versions_: dict[str, VersionState] = {}
        win = config.window
        self.clock_ = WindowClock(win.size, int(win.hop or win.size), win.allowed_lateness)
        self.pane_counts_: dict[int, int] = {}
        volume = config.volume
        self.volume_ = VolumeDetector(volume, reference.event_rate) if volume else None
        silence_after = volume.silence_after if volume else None
        self.silence_ = SilenceDetector(silence_after) if silence_after else None
        self.lifecycle_ = AlertLifecycle(config.alerts, config.id, reference.reference_id)

    # -- events in ---------------------------------------------------------------------------

    def update_features(self, batch: FeatureBatch) -> list[Alert]:
        alerts: list[Alert] = []
        for version, rows in split_by_version(batch):
            state = self._state(version, rows)
            if state.monitor is None:
                alerts.extend(self._warm_up(version, state, rows))
            else:
                alerts.extend(state.monitor.update_features(rows))
        self._count(pane_counts(batch, self.clock_.hop))
        return alerts

    def profile(
        self, batch: FeatureBatch, partition: int | None = None
    ) -> list[tuple[str, WindowProfile]]:
        """Stage 1 (pure): profiles per version, against the configured reference."""
        template = Monitor(self.version_config_, self.reference)
        return [
            (version, prof)
            for version, rows in split_by_version(batch)
            for prof in template.profile(rows, partition)
        ]

    def add_profiles(self, items: list[tuple[str, WindowProfile]]) -> list[Alert]:
        """Stage 2: merge each version's profiles into its monitor (the two-stage path uses
        the configured reference for every version; warm-up references need update_features)."""
        by_version: dict[str, list[WindowProfile]] = {}
        for version, prof in items:
            by_version.setdefault(version, []).append(prof)
        alerts: list[Alert] = []
        for version, profs in by_version.items():
            overall = [(p.window_start, p.count, p.last_event_time) for p in profs
                       if p.segment is None and p.count]  # fmt: skip
            if not overall:
                continue
            # profiles carry no first event time: the roll-out is dated to its first pane
            first = min(p[0] for p in overall)
            state = self._state_at(version, first, max(p[2] for p in overall))
            if state.monitor is None:
                state.monitor = Monitor(self.version_config_, self.reference, version)
            alerts.extend(state.monitor.add_profiles(profs))
            self._count(overall)
        return alerts

    def update_outcomes(self, batch: OutcomeBatch) -> list[Alert]:
        """Outcomes carry no version: every live version's joiner sees them (the one that
        made the prediction joins it; the others drop it at their TTL)."""
        alerts: list[Alert] = []
        for state in self.versions_.values():
            if state.monitor is not None:
                alerts.extend(state.monitor.update_outcomes(batch))
        return alerts

    # -- time --------------------------------------------------------------------------------

    def advance(self, watermark_ms: int) -> list[Alert]:
        alerts = self._announce(watermark_ms)
        for version in sorted(self.versions_):
            monitor = self.versions_[version].monitor
            if monitor is not None:
                alerts.extend(monitor.advance(watermark_ms))
        alerts.extend(self._model_volume(watermark_ms))
        alerts.extend(self._retire(watermark_ms))
        return alerts

    @property
    def live_versions(self) -> list[str]:
        return sorted(self.versions_)

    def monitor(self, version: str) -> Monitor | None:
        state = self.versions_.get(version)
        return None if state is None else state.monitor

    # -- state -------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return SNAPSHOT_MAGIC + pickle.dumps(self.__dict__, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, data: bytes) -> VersionRegistry:
        if not data.startswith(SNAPSHOT_MAGIC):
            raise ValueError("not a driftwire version-registry snapshot")
        reg = cls.__new__(cls)
        reg.__dict__.update(pickle.loads(data[len(SNAPSHOT_MAGIC) :]))
        return reg

    # -- internals ---------------------------------------------------------------------------

    def _state(self, version: str, rows: FeatureBatch) -> VersionState:
        t = rows.event_time
        state = self._state_at(version, int(t.min()), int(t.max()))
        if state.monitor is None and not self.versions_config.warmup_reference:
            state.monitor = Monitor(self.version_config_, self.reference, version)
        return state

    def _state_at(self, version: str, first: int, last: int) -> VersionState:
        state = self.versions_.get(version)
        if state is None:
            self._make_room()
            state = self.versions_[version] = VersionState(first_seen=first, last_seen=last)
        state.first_seen = min(state.first_seen, first)
        state.last_seen = max(state.last_seen, last)
        return state

    def _make_room(self) -> None:
        """At the cap, the version idle longest is dropped (without a lifecycle event: it was
        not retired by the rules, so say so in the log)."""
        if len(self.versions_) < self.versions_config.max_versions:
            return
        idle = min(self.versions_, key=lambda v: (self.versions_[v].last_seen, v))
        log.warning("model %s: more than %d live versions, dropping %r",
                    self.config.id, self.versions_config.max_versions, idle)  # fmt: skip
        del self.versions_[idle]

    def _warm_up(self, version: str, state: VersionState, rows: FeatureBatch) -> list[Alert]:
        """Collect the version's first events; once enough, they become its reference."""
        state.warmup.append(rows)
        if sum(len(b) for b in state.warmup) < self.versions_config.warmup_events:
            return []
        events = concat(state.warmup)
        ref = ReferenceProfile.from_batch(events, self.version_config_)
        state.monitor, state.warmup = Monitor(self.version_config_, ref, version), []
        return []

    def _count(self, panes: list[tuple[int, int, int]]) -> None:
        """Model-level traffic: (pane start, count, last event time) per pane."""
        for start, count, last in panes:
            if self.silence_ is not None and count:
                self.silence_.observe(int(last))
            if self.clock_.accepts(start):
                self.pane_counts_[start] = self.pane_counts_.get(start, 0) + count

    def _announce(self, watermark: int) -> list[Alert]:
        due = sorted(
            (s.first_seen, v)
            for v, s in self.versions_.items()
            if not s.announced and s.first_seen <= watermark
        )
        alerts = []
        for first, version in due:
            self.versions_[version].announced = True
            others = sorted(v for v in self.versions_ if v != version)
            alerts.append(self._lifecycle(version, first, first, Status.FIRING, others))
        return alerts

    def _retire(self, watermark: int) -> list[Alert]:
        newest = max((s.last_seen for s in self.versions_.values()), default=None)
        after = self.versions_config.retire_after
        gone = [
            v
            for v, s in sorted(self.versions_.items())
            if s.announced and watermark - s.last_seen >= after and s.last_seen < newest
        ]
        alerts = []
        for version in gone:
            state = self.versions_.pop(version)
            others = sorted(self.versions_)
            alerts.append(
                self._lifecycle(version, state.first_seen, state.last_seen, Status.RESOLVED, others)
            )
        return alerts

    def _lifecycle(
        self, version: str, start: int, end: int, status: Status, others: list[str]
    ) -> Alert:
        event = "rollout" if status is Status.FIRING else "retired"
        verdict = Verdict(
            kind=AlertKind.LIFECYCLE,
            detector="model_version",
            statistic="first_event_time" if event == "rollout" else "last_event_time",
            value=float(end),
            threshold=0.0,
            breached=status is Status.FIRING,
            window_start=start,
            window_end=end,
            window_count=0,
            feature=version,
            severity=Severity.INFO,
            evidence=Evidence(notes={"event": event, "other_versions": ",".join(others)}),
        )
        return alert_from_verdict(
            verdict, status, self.config.id, self.reference.reference_id, version
        )

    def _model_volume(self, watermark: int) -> list[Alert]:
        due = self.clock_.advance(int(watermark), list(self.pane_counts_))
        verdicts: list[Verdict] = []
        for start in due:
            if self.volume_ is not None:
                end = start + self.clock_.size
                count = sum(self.pane_counts_.get(p, 0) for p in range(start, end, self.clock_.hop))
                verdicts.append(self.volume_.update(count, start, end))
        for pane in [p for p in self.pane_counts_ if self.clock_.pane_expired(p)]:
            del self.pane_counts_[pane]
        alerts = [a for v in verdicts for a in self.lifecycle_.observe(v)]
        if self.silence_ is not None:
            for v in self.silence_.check(int(watermark)):
                status = Status.FIRING if v.breached else Status.RESOLVED
                alerts.append(
                    alert_from_verdict(v, status, self.config.id, self.reference.reference_id)
                )
        return alerts


def pane_counts(batch: FeatureBatch, hop: int) -> list[tuple[int, int, int]]:
    """(pane start, count, last event time) per pane of a batch, without profiling it."""
    if len(batch) == 0:
        return []
    panes = (batch.event_time // hop) * hop
    starts, inverse, counts = np.unique(panes, return_inverse=True, return_counts=True)
    last = np.full(len(starts), np.iinfo(np.int64).min)
    np.maximum.at(last, inverse, batch.event_time)
    return list(zip(starts.tolist(), counts.tolist(), last.tolist(), strict=True))


def split_by_version(batch: FeatureBatch) -> list[tuple[str, FeatureBatch]]:
    """(version, rows) per model version in the batch; missing versions are ''."""
    if batch.model_version is None or len(batch) == 0:
        return [(UNKNOWN_VERSION, batch)] if len(batch) else []
    tags = np.array([v or UNKNOWN_VERSION for v in batch.model_version.tolist()], dtype=str)
    first = tags[0]
    if (tags == first).all():
        return [(str(first), batch)]
    return [(str(v), batch.take(tags == v)) for v in np.unique(tags)]


def concat(batches: list[FeatureBatch]) -> FeatureBatch:
    """One batch of the rows of several batches of the same model and columns."""
    head = batches[0]

    def cat(name: str) -> np.ndarray | None:
        cols = [getattr(b, name) for b in batches]
        return None if any(c is None for c in cols) else np.concatenate(cols)

    return FeatureBatch(
        model_id=head.model_id,
        prediction_id=np.concatenate([b.prediction_id for b in batches]),
        event_time=np.concatenate([b.event_time for b in batches]),
        numeric={k: np.concatenate([b.numeric[k] for b in batches]) for k in head.numeric},
        categorical={
            k: np.concatenate([b.categorical[k] for b in batches]) for k in head.categorical
        },
        score=cat("score"),
        label=cat("label"),
        segment=cat("segment"),
        model_version=cat("model_version"),
        latency_ms=cat("latency_ms"),
    )
