"""Monitor state: split-and-merge and snapshot/restore give the alerts of one plain run."""

import numpy as np
import pytest
from driftwire.detectors import ModelConfig, Monitor, ReferenceProfile, SegmentConfig, WindowConfig
from driftwire.detectors.generators import NewCategory, Shift, StreamSpec, generate, take_events

SPEC = StreamSpec(n_numeric=5, n_categorical=2, rate=1000.0, seed=11, segments=("de", "fr"))
DRIFTS = [Shift(("x1",), 30_000, 0.5), NewCategory("c0", 50_000, 0.1)]
CFG = ModelConfig(
    id="m",
    window=WindowConfig(size=5_000, min_count=200, allowed_lateness=1_000),
    segments=SegmentConfig(key="country", max_segments=5, min_count=500),
)
REF = ReferenceProfile.from_batch(take_events(SPEC, 10_000), CFG)


def _batches():
    return list(generate(SPEC, 80_000, drifts=DRIFTS, batch_size=2_500))


def _ids(alerts):
    return [a.alert_id for a in alerts]


def _plain_run():
    mon, alerts = Monitor(CFG, REF), []
    for b in _batches():
        alerts += mon.update_features(b) + mon.advance(int(b.event_time.max()))
    return mon, alerts


def test_plain_run_alerts_on_the_drifts_and_segments():
    _, alerts = _plain_run()
    firing = {(a.kind.value, a.feature, a.segment) for a in alerts if a.status == "firing"}
    assert ("data_drift", "x1", None) in firing and ("data_drift", "c0", None) in firing
    assert ("data_drift", "x1", "de") in firing
    assert not any(f in {"x0", "x2", "x3", "x4"} for _, f, _ in firing)
    assert _ids(alerts) == sorted(set(_ids(alerts)), key=_ids(alerts).index)  # no duplicates


def test_split_over_partitions_and_merged_gives_the_same_alerts():
    _, expected = _plain_run()
    mon, alerts = Monitor(CFG, REF), []
    rng = np.random.default_rng(5)
    for b in _batches():
        part = rng.integers(0, 4, len(b))
        profiles = [p for k in range(4) for p in mon.profile(b.take(part == k), partition=k)]
        rng.shuffle(profiles)
        alerts += mon.add_profiles(profiles) + mon.advance(int(b.event_time.max()))
    assert _ids(alerts) == _ids(expected)


def test_snapshot_restore_then_continue_gives_the_same_alerts():
    _, expected = _plain_run()
    mon, alerts = Monitor(CFG, REF), []
    for i, b in enumerate(_batches()):
        if i % 7 == 3:
            mon = Monitor.restore(mon.snapshot())
        alerts += mon.update_features(b) + mon.advance(int(b.event_time.max()))
    assert _ids(alerts) == _ids(expected)
    assert mon.counters_.windows_tested == 15  # the last window waits for lateness


def test_unknown_snapshot_version_is_refused():
    data = bytearray(Monitor(CFG, REF).snapshot())
    data[6] = 99
    with pytest.raises(ValueError, match="format 99 is not supported"):
        Monitor.restore(bytes(data))


def test_late_events_within_lateness_count_later_ones_are_reported():
    mon = Monitor(CFG, REF)
    batch = next(iter(generate(SPEC, 10_000, batch_size=10_000)))
    early = batch.take(batch.event_time < 5_000)
    mon.update_features(batch.take(batch.event_time >= 5_000))
    mon.advance(5_500)  # window [0, 5s) closes at 6s: still open
    mon.update_features(early.take(np.arange(100)))
    assert mon.counters_.late_accepted == 100
    mon.advance(6_000)
    mon.update_features(early.take(np.arange(100, 150)))
    assert mon.counters_.late_dropped == 50
    mon.advance(5_000)
    assert mon.counters_.watermark_regressions == 1


def test_windows_under_min_count_are_carried_forward():
    cfg = ModelConfig(id="m", window=WindowConfig(size=1_000, min_count=1_500))
    mon = Monitor(cfg, REF)
    for b in generate(SPEC, 4_000, batch_size=1_000):
        mon.update_features(b)
        mon.advance(int(b.event_time.max()) + 1)
    assert mon.counters_.windows_skipped_min_count == 2
    assert mon.counters_.windows_tested == 2  # [0,2s) and [2s,4s)
