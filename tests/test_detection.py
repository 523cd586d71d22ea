"""Detection quality on generated streams with known change points (10,000-event windows)."""

from driftwire.detectors import (
    ModelConfig,
    Monitor,
    PredictionConfig,
    ReferenceProfile,
    WindowConfig,
)
from driftwire.detectors.generators import (
    MissingSpike,
    NewCategory,
    Shift,
    StreamSpec,
    generate,
    take_events,
)

WINDOW_MS = 10_000  # 10,000 events at 1,000 events/s


def _run(spec, duration_ms, drifts, prediction=True):
    cfg = ModelConfig(
        id="m",
        window=WindowConfig(size=WINDOW_MS, min_count=1_000),
        prediction=PredictionConfig(score=prediction),
    )
    mon = Monitor(cfg, ReferenceProfile.from_batch(take_events(spec, 20_000), cfg))
    alerts = []
    for b in generate(spec, duration_ms, drifts=drifts, batch_size=10_000):
        alerts += mon.update_features(b) + mon.advance(int(b.event_time.max()) + 1)
    return [a for a in alerts if a.status == "firing"], mon


def test_abrupt_quarter_sd_shift_in_two_of_twenty_features():
    spec = StreamSpec(n_numeric=20, n_categorical=0, seed=21)
    start = 20 * WINDOW_MS + 3_000  # mid-window
    firing, _ = _run(spec, 30 * WINDOW_MS, [Shift(("x5", "x12"), start, 0.25)], prediction=False)
    drift = [a for a in firing if a.kind == "data_drift"]
    assert {a.feature for a in drift} == {"x5", "x12"}
    first = {f: min(a.window_start for a in drift if a.feature == f) for f in ("x5", "x12")}
    assert all(20 * WINDOW_MS <= s <= 21 * WINDOW_MS for s in first.values())
    assert not [a for a in firing if a.kind == "data_quality"]


def test_gradual_drift_to_half_sd_over_fifty_windows_is_caught():
    spec = StreamSpec(n_numeric=5, n_categorical=0, seed=22)
    ramp = Shift(("x3",), 10 * WINDOW_MS, 0.5, kind="incremental", duration_ms=50 * WINDOW_MS)
    firing, _ = _run(spec, 60 * WINDOW_MS, [ramp], prediction=False)
    assert {a.feature for a in firing} == {"x3"}
    assert min(a.window_start for a in firing) < 40 * WINDOW_MS


def test_new_category_at_five_percent_is_caught():
    spec = StreamSpec(n_numeric=3, n_categorical=3, seed=23)
    firing, _ = _run(spec, 20 * WINDOW_MS, [NewCategory("c1", 10 * WINDOW_MS, 0.05)])
    kinds = {(a.kind.value, a.detector) for a in firing if a.feature == "c1"}
    assert ("data_drift", "chi2") in kinds and ("data_quality", "unseen_rate") in kinds
    assert {a.feature for a in firing} == {"c1"}
    assert min(a.window_start for a in firing) == 10 * WINDOW_MS


def test_missing_value_spike_is_data_quality_not_drift():
    spec = StreamSpec(n_numeric=5, n_categorical=2, seed=24)
    spike = MissingSpike(("x2", "c1"), 10 * WINDOW_MS, 13 * WINDOW_MS, rate=0.3)
    firing, _ = _run(spec, 20 * WINDOW_MS, [spike])
    assert {(a.kind.value, a.detector, a.feature) for a in firing} == {
        ("data_quality", "missing_rate", "x2"),
        ("data_quality", "missing_rate", "c1"),
    }


def test_thousand_stationary_windows_of_twenty_features_stay_quiet():
    spec = StreamSpec(n_numeric=20, n_categorical=0, seed=25)
    firing, mon = _run(spec, 1_000 * WINDOW_MS, [], prediction=False)
    assert mon.counters_.windows_tested == 1_000
    assert len(firing) <= 1, firing
