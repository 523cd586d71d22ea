"""Version roll-outs: lifecycle events, no drift alert from the change itself, retirement."""

from __future__ import annotations

import numpy as np
from driftwire.detectors.alerts import AlertKind, Status
from driftwire.detectors.config import ModelConfig, VersionsConfig, VolumeConfig, WindowConfig
from driftwire.detectors.generators import Shift, StreamSpec, generate, take_events
from driftwire.detectors.reference import ReferenceProfile
from driftwire.detectors.versions import VersionRegistry, concat, split_by_version

SPEC = StreamSpec(n_numeric=4, n_categorical=1, rate=1000.0, seed=21)
ROLLOUT = 200_000


def _registry(**versions) -> VersionRegistry:
    cfg = ModelConfig(
        id="fraud",
        window=WindowConfig(size=10_000, min_count=200),
        versions=VersionsConfig(retire_after=versions.pop("retire_after", 30_000), **versions),
        volume=VolumeConfig(silence_after=60_000),
    )
    return VersionRegistry(cfg, ReferenceProfile.from_batch(take_events(SPEC, 20_000), cfg))


def _stream(drifts=(), duration=400_000, canary_until=None):
    """v6 before the roll-out, v7 after; with canary_until, v7 takes a random 10% first."""
    rng = np.random.default_rng(1)
    for batch in generate(SPEC, duration, drifts=drifts, batch_size=2_000):
        t = batch.event_time
        new = t >= ROLLOUT
        if canary_until is not None:
            canary = (t >= ROLLOUT - 50_000) & (t < canary_until) & (rng.random(len(t)) < 0.1)
            new = (new & (t >= canary_until)) | canary
        batch.model_version = np.where(new, "v7", "v6").astype(object)
        yield batch


def _run(reg, batches):
    alerts = []
    for batch in batches:
        alerts += reg.update_features(batch)
        alerts += reg.advance(int(batch.event_time.max()))
    return alerts


def test_rollout_is_a_lifecycle_event_and_raises_no_drift_volume_or_silence():
    reg = _registry()
    alerts = _run(reg, _stream())
    life = [(a.feature, a.status, a.window_start, a.model_version) for a in alerts]
    assert life == [
        ("v6", Status.FIRING, 0, "v6"),
        ("v7", Status.FIRING, ROLLOUT, "v7"),
        ("v6", Status.RESOLVED, 0, "v6"),
    ]
    assert {a.kind for a in alerts} == {AlertKind.LIFECYCLE}
    retired = alerts[2]
    assert retired.evidence.notes == {"event": "retired", "other_versions": "v7"}
    assert ROLLOUT - 2 <= retired.window_end < ROLLOUT  # v6's last event
    assert reg.live_versions == ["v7"] and reg.monitor("v6") is None
    v7 = reg.monitor("v7")
    assert v7.model_version == "v7" and v7.counters_.windows_tested >= 19


def test_a_canary_split_is_two_live_versions_without_alerts_until_v6_retires():
    alerts = _run(_registry(), _stream(canary_until=250_000))
    life = [(a.feature, a.status.value) for a in alerts]
    assert life == [("v6", "firing"), ("v7", "firing"), ("v6", "resolved")]
    assert alerts[1].window_start < ROLLOUT - 49_000  # the canary's first event
    assert alerts[2].window_end >= 249_000  # v6 served until the full switch


def test_drift_that_comes_with_the_new_version_is_attributed_to_it():
    shift = [Shift(features=("x1",), start_ms=ROLLOUT, magnitude=1.0)]
    alerts = _run(_registry(), _stream(drifts=shift))
    drift = [a for a in alerts if a.kind is AlertKind.DATA_DRIFT and a.status is Status.FIRING]
    assert drift and {(a.feature, a.model_version) for a in drift} == {("x1", "v7")}
    assert min(a.window_start for a in drift) == ROLLOUT


def test_warmup_reference_compares_the_new_version_with_its_own_first_events():
    shift = [Shift(features=("x1",), start_ms=ROLLOUT, magnitude=1.0)]
    reg = _registry(warmup_reference=True, warmup_events=20_000)
    alerts = _run(reg, _stream(drifts=shift))
    assert not [a for a in alerts if a.kind is AlertKind.DATA_DRIFT and a.model_version == "v7"]
    assert reg.monitor("v7").reference.count >= 20_000


def test_model_silence_is_watched_across_versions():
    reg = _registry()
    alerts = _run(reg, _stream(duration=300_000))
    assert not [a for a in alerts if a.kind is AlertKind.SILENCE]
    assert [a.status.value for a in reg.advance(360_000) if a.kind is AlertKind.SILENCE] == [
        "firing"
    ]


def test_two_stage_path_and_snapshot_restore_give_the_same_alerts():
    batches = list(_stream())
    expected = _run(_registry(), batches)
    reg = _registry()
    got = []
    for k, batch in enumerate(batches):
        if k == 100:
            reg = VersionRegistry.restore(reg.snapshot())
        got += reg.add_profiles(reg.profile(batch, partition=k % 3))
        got += reg.advance(int(batch.event_time.max()))
    assert [(a.kind, a.feature, a.status) for a in got] == [
        (a.kind, a.feature, a.status) for a in expected
    ]
    # profiles carry no first event time: the roll-out is dated to its first pane
    assert got[1].window_start == ROLLOUT


def test_split_and_concat_round_trip():
    batch = next(_stream())
    batch.model_version[::3] = None
    parts = dict(split_by_version(batch))
    assert sorted(parts) == ["", "v6"] and sum(len(p) for p in parts.values()) == len(batch)
    again = concat(list(parts.values()))
    assert sorted(again.prediction_id.tolist()) == sorted(batch.prediction_id.tolist())
