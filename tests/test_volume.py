"""Volume and silence: known traffic drops, spikes and stops; stationary traffic stays quiet."""

from __future__ import annotations

import dataclasses
import pickle
import struct

import numpy as np
from driftwire.detectors.alerts import AlertKind
from driftwire.detectors.config import (
    ModelConfig,
    SegmentConfig,
    VolumeConfig,
    WindowConfig,
    parse_config,
)
from driftwire.detectors.generators import StreamSpec, generate, take_events
from driftwire.detectors.monitor import SNAPSHOT_MAGIC, SNAPSHOT_VERSION, Monitor
from driftwire.detectors.reference import ReferenceProfile
from driftwire.detectors.volume import HOUR_MS, SilenceDetector, VolumeDetector

SPEC = StreamSpec(n_numeric=3, n_categorical=1, rate=1000.0, seed=5)
WINDOW = 10_000


def _monitor(model_id="m", **volume) -> Monitor:
    cfg = ModelConfig(
        id=model_id,
        window=WindowConfig(size=WINDOW, min_count=100),
        volume=VolumeConfig(**volume),
    )
    return Monitor(cfg, ReferenceProfile.from_batch(take_events(SPEC, 20_000), cfg))


def _thinned(duration_ms, keep, seed=0, spec=SPEC, start_ms=0):
    """(events kept with probability keep(t), watermark): binomial window counts, and the
    watermark keeps moving (as other models' traffic would move it) when nothing is kept."""
    rng = np.random.default_rng(seed)
    for batch in generate(spec, duration_ms, start_ms=start_ms, batch_size=2_000):
        mask = rng.random(len(batch)) < keep(batch.event_time)
        yield batch.take(mask), int(batch.event_time.max())


def _run(mon, batches):
    alerts = []
    for batch, watermark in batches:
        alerts += mon.update_features(batch)
        alerts += mon.advance(watermark)
    return alerts


def _kind(alerts, kind):
    return [(a.status.value, a.window_start) for a in alerts if a.kind is kind]


def test_a_50_percent_volume_drop_is_alerted_and_resolved():
    drop_at, back_at = 200_000, 300_000

    def keep(t):
        return np.where((t >= drop_at) & (t < back_at), 0.45, 0.9)

    mon = _monitor(drop_factor=0.7)
    alerts = _run(mon, _thinned(400_000, keep))
    volume = _kind(alerts, AlertKind.VOLUME)
    assert volume[0] == ("firing", drop_at)
    assert volume[1][0] == "resolved" and back_at <= volume[1][1] <= back_at + 3 * WINDOW
    assert len(volume) == 2
    fired = next(a for a in alerts if a.kind is AlertKind.VOLUME)
    assert 0.4 < fired.value < 0.6 and fired.evidence.notes["direction"] == "drop"
    # the features did not change: nothing else fired
    assert {a.kind for a in alerts} == {AlertKind.VOLUME}


def test_stationary_volume_stays_quiet():
    mon = _monitor()
    alerts = _run(mon, _thinned(600_000, lambda t: np.full(len(t), 0.9), seed=1))
    assert mon.counters_.windows_tested >= 59
    assert _kind(alerts, AlertKind.VOLUME) == []


def test_spike_is_alerted_and_tiny_windows_do_not_flap():
    det = VolumeDetector(VolumeConfig(), reference_rate=1.0)
    assert det.update(25_000, 0, 10_000).breached  # 2.5x the reference rate
    small = VolumeDetector(VolumeConfig(), reference_rate=0.001)  # 10 expected per window
    verdicts = [small.update(3, w * 10_000, (w + 1) * 10_000) for w in range(20)]
    assert all(v.value < 0.5 for v in verdicts) and not any(v.breached for v in verdicts)
    assert small.update(0, 200_000, 210_000).breached is False  # P(0 | 10) = 4.5e-5 ...
    assert VolumeDetector(VolumeConfig(alpha=1e-3), 0.002).update(0, 0, 10_000).breached


def test_without_reference_rate_the_first_windows_are_learned():
    det = VolumeDetector(VolumeConfig(warmup_windows=3))
    first = [det.update(1000, w * 1000, (w + 1) * 1000) for w in range(3)]
    assert not any(v.breached for v in first) and first[0].evidence.notes["expected_from"]
    assert det.update(400, 3000, 4000).breached


def test_seasonal_hour_of_week_pattern_is_learned_and_a_night_drop_still_found():
    rng = np.random.default_rng(3)
    det = VolumeDetector(VolumeConfig(seasonal_weeks=2), reference_rate=1000 / HOUR_MS)
    week = 168

    def level(h):
        return 1000 if 8 <= h % 24 < 20 else 200  # day / night

    flagged = []
    for h in range(4 * week):
        count = rng.poisson(level(h) * (0.25 if h == 3 * week + 26 else 1.0))  # night, week 4
        v = det.update(int(count), h * HOUR_MS, (h + 1) * HOUR_MS)
        flagged.append((h, v.breached, v.evidence.notes["expected_from"]))
    assert any(b for h, b, _ in flagged if h < week)  # before history: nights look like drops
    late = [(h, basis) for h, b, basis in flagged if h >= 2 * week and b]
    assert late == [(3 * week + 26, "seasonal")]


def test_silent_model_is_reported_within_the_configured_time_while_others_flow():
    stop_at, resume_at, silence_after = 120_000, 300_000, 30_000
    spec_b = dataclasses.replace(SPEC, seed=9)
    a = _monitor("a", silence_after=silence_after)
    b = _monitor("b", silence_after=silence_after)
    alerts = {"a": [], "b": []}
    feeds = zip(
        _thinned(400_000, lambda t: np.full(len(t), 0.9), seed=2),
        _thinned(400_000, lambda t: ((t < stop_at) | (t >= resume_at)) * 0.9, 3, spec_b),
        strict=True,
    )
    reported_at = None
    for (batch_a, watermark), (batch_b, _) in feeds:
        alerts["a"] += a.update_features(batch_a)
        alerts["b"] += b.update_features(batch_b)
        alerts["a"] += a.advance(watermark)
        new = b.advance(watermark)
        if reported_at is None and any(x.kind is AlertKind.SILENCE for x in new):
            reported_at = watermark
        alerts["b"] += new
    silence = [x for x in alerts["b"] if x.kind is AlertKind.SILENCE]
    assert [x.status.value for x in silence] == ["firing", "resolved"]
    assert stop_at - 100 <= silence[0].window_start < stop_at  # the last event before the stop
    last_event = silence[0].window_start
    assert last_event + silence_after <= reported_at <= stop_at + silence_after + 2_000
    assert silence[1].window_start == silence[0].window_start
    assert silence[0].alert_id != silence[1].alert_id
    assert _kind(alerts["a"], AlertKind.SILENCE) == []


def test_silence_counts_from_the_first_watermark_when_no_event_ever_came():
    det = SilenceDetector(silence_after=1_000)
    assert det.check(10_000) == [] and det.check(10_999) == []
    assert [v.breached for v in det.check(11_000)] == [True]
    assert det.check(50_000) == []  # one firing per spell


def test_snapshot_restore_keeps_volume_and_silence_state():
    def keep(t):
        return np.where((t >= 150_000) & (t < 200_000), 0.0, np.where(t >= 250_000, 0.4, 0.9))

    batches = list(_thinned(400_000, keep, seed=4))
    whole = _monitor(silence_after=20_000, drop_factor=0.6)
    expected = _run(whole, batches)
    first = _monitor(silence_after=20_000, drop_factor=0.6)
    got = _run(first, batches[:90])
    got += _run(Monitor.restore(first.snapshot()), batches[90:])
    assert [x.alert_id for x in got] == [x.alert_id for x in expected]
    kinds = {x.kind for x in expected}
    assert {AlertKind.SILENCE, AlertKind.VOLUME} <= kinds


def test_reference_keeps_its_rate_and_id_and_round_trips_through_avro():
    batch = take_events(SPEC, 20_000)
    cfg = ModelConfig(id="m")
    ref = ReferenceProfile.from_batch(batch, cfg)
    assert abs(ref.event_rate - 1.0) < 0.01  # 1000 events per s of event time
    assert ref.latency.count == 0 and "latency_index" not in ref.to_record()
    again = ReferenceProfile.from_bytes(ref.to_bytes())
    assert again.time_span_ms == ref.time_span_ms and again.reference_id == ref.reference_id
    # the rate is metadata, not content: the id (and so every alert's reference_id) is as before
    no_time = dataclasses.replace(batch, event_time=np.zeros(len(batch), dtype=np.int64))
    same = ReferenceProfile.from_batch(no_time, cfg)
    assert same.reference_id == ref.reference_id and same.event_rate is None
    batch.latency_ms = np.random.default_rng(0).lognormal(3.0, 0.3, len(batch))
    with_latency = ReferenceProfile.from_bytes(ReferenceProfile.from_batch(batch, cfg).to_bytes())
    assert with_latency.latency.count == len(batch)
    assert with_latency.reference_id != ref.reference_id


def test_snapshot_from_before_the_signal_detectors_restores_and_runs():
    mon = _monitor(silence_after=20_000)
    state = dict(mon.__dict__)
    for name in ("volume_", "segment_volume_", "silence_", "latency_"):
        del state[name]
    old = SNAPSHOT_MAGIC + struct.pack(">H", SNAPSHOT_VERSION) + pickle.dumps(state)
    restored = Monitor.restore(old)
    alerts = _run(restored, _thinned(100_000, lambda t: np.full(len(t), 0.9)))
    assert restored.volume_ is not None and restored.counters_.windows_tested >= 9
    assert alerts == []


def test_signal_sections_parse_from_a_config_file_mapping():
    raw = {
        "models": [
            {"id": "fraud-v1"},
            {
                "id": "fraud-v2",
                "volume": {"drop_factor": 0.6, "silence_after": "5m"},
                "latency": {"slo_ms": {"p99": 120}},
                "versions": {"retire_after": "2h"},
                "shadow": {"champion": "fraud-v1"},
            },
        ]
    }
    v1, v2 = parse_config(raw).models
    assert (v1.volume, v1.latency, v1.versions, v1.shadow) == (None, None, None, None)
    assert v2.volume.silence_after == 300_000 and v2.versions.retire_after == 7_200_000
    assert v2.latency.slo_ms == {"p99": 120.0} and v2.shadow.champion == "fraud-v1"


def test_segment_volume_drop_is_alerted_for_that_segment_only():
    cfg = ModelConfig(
        id="m",
        window=WindowConfig(size=WINDOW, min_count=100),
        segments=SegmentConfig(key="country", min_count=500),
        volume=VolumeConfig(drop_factor=0.6),
    )
    mon = Monitor(cfg, ReferenceProfile.from_batch(take_events(SPEC, 20_000), cfg))
    rng = np.random.default_rng(6)
    alerts = []
    for batch, watermark in _thinned(300_000, lambda t: np.full(len(t), 0.9), seed=6):
        country = np.where(rng.random(len(batch)) < 0.5, "FR", "DE").astype(object)
        lost = (country == "FR") & (batch.event_time >= 150_000) & (rng.random(len(batch)) < 0.6)
        batch = batch.take(~lost)
        batch.segment = country[~lost]
        alerts += mon.update_features(batch) + mon.advance(watermark)
    volume = [(a.segment, a.status.value, a.window_start) for a in alerts]
    assert volume == [("FR", "firing", 150_000)]
