"""Latency sketch accuracy vs numpy, mergeability, and the SLO / shift detector."""

from __future__ import annotations

import numpy as np
import pytest
from driftwire.detectors.alerts import AlertKind
from driftwire.detectors.config import ModelConfig, WindowConfig
from driftwire.detectors.generators import StreamSpec, generate, take_events
from driftwire.detectors.latency import (
    QUANTILES,
    RELATIVE_ACCURACY,
    LatencyConfig,
    LatencyDetector,
    LatencySketch,
)
from driftwire.detectors.monitor import Monitor
from driftwire.detectors.profile import WindowProfile
from driftwire.detectors.reference import ReferenceProfile
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).lognormal(3.5, 0.6, 50_000),
        np.random.default_rng(1).exponential(25.0, 20_000),
        np.random.default_rng(2).uniform(0.5, 3_000.0, 10_000),
    ],
    ids=["lognormal", "exponential", "uniform"],
)
def test_quantiles_within_relative_accuracy_of_numpy(values):
    sketch = LatencySketch.from_values(values)
    for q in (*QUANTILES.values(), 0.001, 0.999):
        exact = np.quantile(values, q, method="inverted_cdf")
        assert abs(sketch.quantile(q) / exact - 1) <= RELATIVE_ACCURACY + 1e-12


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.02, 1e6, allow_nan=False), min_size=1, max_size=300),
    st.integers(0, 300),
    st.floats(0.0, 1.0),
)
def test_split_and_merge_equals_whole(values, cut, q):
    xs = np.array(values)
    cut = min(cut, len(xs))
    parts = LatencySketch.from_values(xs[:cut]).merge(LatencySketch.from_values(xs[cut:]))
    whole = LatencySketch.from_values(xs)
    assert np.array_equal(parts.counts, whole.counts)
    exact = np.quantile(xs, q, method="inverted_cdf")
    assert abs(whole.quantile(q) / exact - 1) <= RELATIVE_ACCURACY + 1e-12


def test_missing_negative_and_nonfinite_are_ignored_and_sparse_round_trips():
    sketch = LatencySketch.from_values(np.array([np.nan, -1.0, np.inf, 10.0, 20.0, 0.0]))
    assert sketch.count == 3
    assert np.array_equal(LatencySketch.from_sparse(*sketch.to_sparse()).counts, sketch.counts)
    assert np.isnan(LatencySketch().quantile(0.5))


def _windows(rng, p99_target_shift_at=None, n_windows=30, n=2_000):
    """Latency windows: lognormal with p99 ~ 40 ms, then ~120 ms after the change window."""
    for w in range(n_windows):
        slow = p99_target_shift_at is not None and w >= p99_target_shift_at
        yield w, LatencySketch.from_values(rng.lognormal(np.log(20.0 * (3 if slow else 1)), 0.3, n))


def test_p99_rising_from_40_to_120_ms_is_alerted():
    rng = np.random.default_rng(7)
    ref = LatencySketch.from_values(rng.lognormal(np.log(20.0), 0.3, 20_000))
    assert 35 < ref.quantile(0.99) < 45
    det = LatencyDetector(LatencyConfig(slo_ms={"p99": 80.0}), ref)
    breached = {}
    for w, sketch in _windows(rng, p99_target_shift_at=20):
        for v in det.update(sketch, w * 60_000, (w + 1) * 60_000):
            assert v.kind is AlertKind.LATENCY
            breached.setdefault(v.detector, []).append((w, v.breached))
    for detector in ("latency_slo", "latency_shift"):
        flagged = [w for w, b in breached[detector] if b]
        assert flagged == list(range(20, 30)), detector


def test_stationary_latency_stays_quiet_with_and_without_reference():
    rng = np.random.default_rng(8)
    ref = LatencySketch.from_values(rng.lognormal(np.log(20.0), 0.3, 20_000))
    with_ref = LatencyDetector(LatencyConfig(slo_ms={"p99": 80.0}), ref)
    warmup = LatencyDetector(LatencyConfig())
    verdicts = []
    for w, sketch in _windows(rng, n_windows=200):
        verdicts += with_ref.update(sketch, w, w + 1) + warmup.update(sketch, w, w + 1)
    assert len(verdicts) > 500 and not any(v.breached for v in verdicts)


def test_warmup_reference_then_shift_is_found():
    rng = np.random.default_rng(9)
    det = LatencyDetector(LatencyConfig(warmup_windows=3))
    flags = [any(v.breached for v in det.update(s, w, w + 1)) for w, s in _windows(rng, 10, 15)]
    assert flags == [False] * 10 + [True] * 5


def test_small_windows_are_not_tested():
    det = LatencyDetector(LatencyConfig(slo_ms={"p99": 1.0}, min_count=200))
    assert det.update(LatencySketch.from_values(np.full(199, 500.0)), 0, 1) == []


def _latency_stream(shift_at_ms=None, duration_ms=300_000, seed=11):
    """Generator batches with latency_ms: lognormal p99 ~40 ms, ~120 ms from shift_at_ms."""
    rng = np.random.default_rng(seed)
    spec = StreamSpec(n_numeric=3, n_categorical=1, rate=500.0, seed=seed)
    for batch in generate(spec, duration_ms, batch_size=2_500):
        slow = (
            np.zeros(len(batch), bool) if shift_at_ms is None else batch.event_time >= shift_at_ms
        )
        batch.latency_ms = rng.lognormal(np.log(np.where(slow, 60.0, 20.0)), 0.3)
        yield batch


def _latency_monitor(**latency):
    cfg = ModelConfig(
        id="m", window=WindowConfig(size=10_000, min_count=100), latency=LatencyConfig(**latency)
    )
    ref_batch = take_events(StreamSpec(n_numeric=3, n_categorical=1, rate=500.0), 10_000)
    ref_batch.latency_ms = np.random.default_rng(0).lognormal(np.log(20.0), 0.3, len(ref_batch))
    return Monitor(cfg, ReferenceProfile.from_batch(ref_batch, cfg))


def test_monitor_alerts_p99_rise_once_and_profiles_carry_the_sketch_over_the_wire():
    mon = _latency_monitor(slo_ms={"p99": 80.0})
    assert mon.reference.latency.count == 10_000
    alerts = []
    for batch in _latency_stream(shift_at_ms=150_000):
        # stage 1 -> bytes -> stage 2, as the worker does over the partials topic
        wire = [WindowProfile.from_bytes(p.to_bytes()) for p in mon.profile(batch, partition=0)]
        alerts += mon.add_profiles(wire) + mon.advance(int(batch.event_time.max()))
    latency = [(a.detector, a.status.value, a.window_start) for a in alerts]
    assert latency == [("latency_shift", "firing", 150_000), ("latency_slo", "firing", 150_000)]
    assert all(a.kind is AlertKind.LATENCY for a in alerts)


def test_monitor_stationary_latency_is_quiet():
    mon = _latency_monitor(slo_ms={"p99": 80.0})
    alerts = []
    for batch in _latency_stream(seed=12):
        alerts += mon.update_features(batch) + mon.advance(int(batch.event_time.max()))
    assert mon.counters_.windows_tested >= 28 and alerts == []
