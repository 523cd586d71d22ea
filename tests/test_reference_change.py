"""A new reference while the stream runs: the switch is at a window boundary fixed by the
published profile, so alerts are the same however the work is cut (no Kafka here)."""

from __future__ import annotations

import pytest
from driftwire.detectors.alerts import Alert
from driftwire.detectors.batch import FeatureBatch
from driftwire.detectors.config import parse_config
from driftwire.detectors.generators import Shift, StreamSpec, generate, take_events
from driftwire.detectors.monitor import Monitor
from driftwire.detectors.reference import ReferenceProfile
from driftwire.detectors.timeline import ReferenceTimeline, switch_time
from driftwire.streams.worker import ModelMerger, PartitionProfiler, Timing

from tests.test_worker_stages import records_of

SPEC = StreamSpec(n_numeric=4, n_categorical=1, rate=200.0, seed=11, model_id="m")
SHIFT_AT = 40_000  # x1 moves by one sd for good
EFFECTIVE = 83_500  # the new reference applies from the next window: 90 s
SWITCH = 90_000


def config(hop: str | None = None):
    window = {"size": "10s", "min_count": 100, "allowed_lateness": "1s"}
    if hop:
        window |= {"type": "hopping", "size": "20s", "hop": hop}
    raw = {"id": "m", "window": window, "alerts": {"fire_after": 1, "resolve_after": 2}}
    return parse_config({"models": [raw]}).model("m")


@pytest.fixture(scope="module")
def old_ref() -> ReferenceProfile:
    return ReferenceProfile.from_batch(take_events(SPEC, 5_000), config())


@pytest.fixture(scope="module")
def new_ref() -> ReferenceProfile:
    """Learned after the shift: the shifted x1 is the new normal."""
    shifted = generate(SPEC, 30_000, drifts=[Shift(("x1",), 0, 1.0)], start_ms=0, batch_size=10**6)
    return ReferenceProfile.from_batch(next(iter(shifted)), config())


def stream(duration_ms: int = 150_000, drift: bool = True) -> FeatureBatch:
    drifts = [Shift(("x1",), SHIFT_AT, 1.0)] if drift else []
    return next(iter(generate(SPEC, duration_ms, drifts=drifts, batch_size=10**7)))


def run(monitor: Monitor, batch: FeatureBatch, step: int = 5_000) -> list[Alert]:
    alerts = []
    for start in range(0, int(batch.event_time.max()) + 1, step):
        part = batch.take((batch.event_time >= start) & (batch.event_time < start + step))
        alerts += monitor.update_features(part) + monitor.advance(start + step)
    return alerts


def test_switch_time_is_the_next_window_boundary() -> None:
    assert switch_time(EFFECTIVE, 10_000) == SWITCH
    assert switch_time(SWITCH, 10_000) == SWITCH
    assert switch_time(-1, 10_000) == 0


def test_a_drift_the_new_reference_absorbs_resolves_after_the_switch(old_ref, new_ref) -> None:
    monitor = Monitor(config(), old_ref)
    assert monitor.rebase(new_ref, SWITCH)
    alerts = run(monitor, stream())
    x1 = [a for a in alerts if a.feature == "x1" and a.kind.value == "data_drift"]
    firing = [a for a in x1 if a.status.value == "firing"]
    assert firing and SHIFT_AT <= min(a.window_start for a in firing) < SWITCH
    resolved = [a for a in x1 if a.status.value == "resolved"]
    assert [a.window_start for a in resolved] == [SWITCH + 10_000]  # resolve_after: 2
    assert resolved[0].reference_id == new_ref.reference_id
    (switch,) = [a for a in alerts if a.kind.value == "lifecycle"]
    assert (switch.detector, switch.feature, switch.window_start) == (
        "reference",
        new_ref.reference_id,
        SWITCH,
    )
    assert switch.evidence.notes == {"event": "reference_changed", "previous": old_ref.reference_id}
    assert not [a for a in alerts if a.window_start >= SWITCH and a.status.value == "firing"
                and a.kind.value != "lifecycle"]  # fmt: skip
    assert monitor.counters_.reference_switches == 1


def test_without_the_switch_the_drift_keeps_firing(old_ref) -> None:
    alerts = run(Monitor(config(), old_ref), stream())
    x1 = [a.status.value for a in alerts if a.feature == "x1" and a.detector == "ks"]
    assert x1 == ["firing"]
    assert not [a for a in alerts if a.kind.value == "lifecycle"]


def test_a_stationary_stream_stays_quiet_across_a_switch(old_ref) -> None:
    same = ReferenceProfile.from_batch(take_events(SPEC, 5_000, seed_offset=3), config())
    monitor = Monitor(config(), old_ref)
    monitor.rebase(same, SWITCH)
    alerts = run(monitor, stream(drift=False))
    assert [(a.kind.value, a.window_start) for a in alerts] == [("lifecycle", SWITCH)]


def test_sliding_windows_straddling_the_switch_are_skipped(old_ref, new_ref) -> None:
    cfg = config(hop="5s")  # 20 s windows every 5 s: 3 windows straddle 90 s
    monitor = Monitor(cfg, ReferenceProfile.from_batch(take_events(SPEC, 5_000), cfg))
    monitor.rebase(
        ReferenceProfile.from_batch(take_events(SPEC, 5_000, seed_offset=5), cfg), SWITCH
    )
    run(monitor, stream(drift=False))
    assert monitor.counters_.windows_skipped_reference == 3


def test_snapshot_mid_switch_gives_the_same_alerts(old_ref, new_ref) -> None:
    batch = stream()
    whole = Monitor(config(), old_ref)
    whole.rebase(new_ref, SWITCH)
    expected = run(whole, batch)
    first = Monitor(config(), old_ref)
    first.rebase(new_ref, SWITCH)
    early = batch.take(batch.event_time < 60_000)
    alerts = run(first, early)
    restored = Monitor.restore(first.snapshot())
    alerts += run(restored, batch.take(batch.event_time >= 60_000))
    assert [a.alert_id for a in alerts] == [a.alert_id for a in expected]


def test_profiles_against_the_wrong_reference_are_dropped_and_counted(old_ref, new_ref) -> None:
    monitor = Monitor(config(), old_ref)
    monitor.rebase(new_ref, SWITCH)
    late_news = Monitor(config(), old_ref)  # a stage 1 that has not heard of the switch
    whole = stream()
    batch = whole.take(whole.event_time >= SWITCH)
    assert len(batch)
    monitor.add_profiles(late_news.profile(batch))
    assert monitor.counters_.reference_mismatch == len(batch)
    assert monitor.counters_.events == 0


def test_rebase_refuses_other_columns_and_repeats(old_ref, new_ref) -> None:
    monitor = Monitor(config(), old_ref)
    assert monitor.rebase(new_ref, SWITCH)
    assert not monitor.rebase(new_ref, SWITCH + 10_000)  # scheduled already
    assert not monitor.rebase(old_ref, SWITCH)  # not after the last switch
    other = parse_config({"models": [{"id": "m", "numeric": ["x0"], "categorical": []}]}).model("m")
    narrow = ReferenceProfile.from_batch(take_events(SPEC, 500), other)
    with pytest.raises(ValueError, match="columns"):
        monitor.rebase(narrow, SWITCH)
    with pytest.raises(ValueError, match="hop"):
        monitor.rebase(
            ReferenceProfile.from_batch(take_events(SPEC, 500, seed_offset=9), config()), 1
        )
    timeline = ReferenceTimeline(10_000, old_ref)
    with pytest.raises(ValueError, match="numeric"):
        timeline.add(narrow, 0)


def test_timeline_state_round_trips(old_ref, new_ref) -> None:
    timeline = ReferenceTimeline(10_000, old_ref, offset_=7)
    assert timeline.add(new_ref, EFFECTIVE) == SWITCH
    assert timeline.add(old_ref, SWITCH) == SWITCH + 10_000  # a roll-back is a new entry
    again = ReferenceTimeline.from_state(timeline.to_state())
    assert again.ids == timeline.ids and again.offset_ == 7
    assert again.starts.tolist() == timeline.starts.tolist()


def test_worker_stages_over_three_partitions_equal_one_monitor(old_ref, new_ref) -> None:
    """Stage 1 profiles each pane against the reference of its start; stage 2 switches."""
    cfg, timing = config(), Timing(10_000, 1_000)
    batch = stream()
    stage1 = Monitor(cfg, old_ref)  # profiles each pane against the reference of its start
    stage1.rebase(new_ref, switch_time(EFFECTIVE, 10_000))
    names = (tuple(old_ref.numeric), tuple(old_ref.categorical))
    profilers = [
        PartitionProfiler(
            p,
            {"m": stage1},
            {"m": timing},
            lambda _m, recs: FeatureBatch.from_records(recs, *names),
        )
        for p in range(3)
    ]
    monitor = Monitor(cfg, old_ref)
    monitor.rebase(new_ref, SWITCH)
    merger = ModelMerger("m", monitor, timing, 3, idle_timeout_ms=10**9)
    records = records_of(batch)
    parts = [[r for r in records if int(r["prediction_id"]) % 3 == p] for p in range(3)]
    alerts = []
    for start in range(0, max(map(len, parts)), 700):
        for p, recs in enumerate(parts):
            chunk = recs[start : start + 700]
            if chunk:
                for report in profilers[p].observe(chunk, start + len(chunk)).reports:
                    alerts += merger.observe(report).alerts
    expected = Monitor(cfg, old_ref)
    expected.rebase(new_ref, SWITCH)
    watermark = min(max(r["event_time"] for r in p) for p in parts)
    want = expected.update_features(batch) + expected.advance(watermark)
    assert any(a.kind.value == "lifecycle" for a in want)
    assert [a.alert_id for a in alerts] == [a.alert_id for a in want]
    assert monitor.counters_.reference_mismatch == 0


def test_a_roll_back_published_before_the_switch_is_a_switch_of_its_own(old_ref, new_ref) -> None:
    """A -> B at 90 s, then back to A at 100 s, both known before either applies."""
    monitor = Monitor(config(), old_ref)
    timeline = ReferenceTimeline(10_000, old_ref)
    for effective, ref in ((EFFECTIVE, new_ref), (SWITCH + 5_000, old_ref)):
        start = timeline.add(ref, effective)
        assert start is not None and monitor.rebase(ref, start)
    assert [monitor.reference_for(t) for t in (80_000, 90_000, 100_000)] == [
        old_ref.reference_id, new_ref.reference_id, old_ref.reference_id]  # fmt: skip
    alerts = run(monitor, stream(drift=False))
    assert [(a.feature, a.window_start) for a in alerts if a.kind.value == "lifecycle"] == [
        (new_ref.reference_id, SWITCH), (old_ref.reference_id, SWITCH + 10_000)]  # fmt: skip
    assert monitor.counters_.reference_mismatch == 0
