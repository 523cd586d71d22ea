"""ConceptTracker end to end on generated streams with known change points and label delays."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from driftwire.detectors.alerts import AlertKind, AlertPolicy, Status
from driftwire.detectors.concept import ConceptConfig, ConceptTracker
from driftwire.detectors.label_generators import (
    concept_flip_stream,
    error_rate_stream,
    regression_stream,
    replay,
    steps,
)

MS = 10  # ms per event in the generated streams
WINDOW = 2_000  # events per window


def tracker(window: int = WINDOW, **kw) -> ConceptTracker:
    return ConceptTracker(ConceptConfig(**kw), "m", window * MS, AlertPolicy(), "ref-1")


def firing(alerts):
    return [a for a in alerts if a.status is Status.FIRING]


def test_label_flip_in_one_region_is_concept_drift_not_data_drift() -> None:
    from driftwire.detectors.config import ModelConfig, WindowConfig
    from driftwire.detectors.monitor import Monitor
    from driftwire.detectors.reference import ReferenceProfile

    stream = concept_flip_stream(80_000, change_at=40_000, max_delay=1_000, seed=2)
    cfg = ModelConfig(
        id="m",
        window=WindowConfig(size=WINDOW * MS, min_count=500),
        concept=ConceptConfig(label_horizon_ms=1_000 * MS),
    )
    ref = ReferenceProfile.from_batch(stream.predictions.take(np.arange(20_000)), cfg)
    alerts = replay(stream, Monitor(cfg, ref))
    kinds = {a.kind for a in firing(alerts)}
    assert AlertKind.CONCEPT_DRIFT in kinds
    assert not kinds & {AlertKind.DATA_DRIFT, AlertKind.PREDICTION_DRIFT}
    first = min(a.window_start for a in firing(alerts) if a.kind is AlertKind.CONCEPT_DRIFT)
    assert first // MS == 40_000


def _delayed(delay_seed: int, batch: int) -> list:
    stream = error_rate_stream(
        60_000,
        change_at=30_000,
        before=0.1,
        after=0.2,
        max_delay=5_000,
        seed=4,
        delay_seed=delay_seed,
    )
    return replay(stream, tracker(label_horizon_ms=5_000 * MS), batch=batch)


def test_delayed_labels_alert_within_5000_labelled_events_whatever_the_arrival_order() -> None:
    alerts = _delayed(delay_seed=1, batch=1_000)
    drift = [a for a in firing(alerts) if a.detector == "adwin"]
    assert drift, "no sequential drift alert"
    assert drift[0].severity.value == "critical"
    position = drift[0].evidence.current["position"]  # labelled events fed before detection
    assert 30_000 <= position <= 35_000
    assert not [a for a in alerts if a.window_end // MS <= 30_000]  # nothing before the change
    perf = [a for a in firing(alerts) if a.detector == "performance.error_rate"]
    assert perf and perf[0].window_start // MS == 30_000 and not perf[0].provisional
    # another arrival order of the labels, another batching: the very same alerts
    assert _delayed(delay_seed=2, batch=700) == alerts


def test_regression_mae_doubling_alerts() -> None:
    stream = regression_stream(40_000, change_at=20_000, factor=2.0, max_delay=500, seed=3)
    alerts = replay(stream, tracker(task="regression", label_horizon_ms=500 * MS))
    detectors = {a.detector for a in firing(alerts) if a.window_start // MS >= 20_000}
    assert {"adwin", "performance.mae"} <= detectors
    assert not [a for a in alerts if a.window_end // MS <= 20_000]
    mae = next(a for a in firing(alerts) if a.detector == "performance.mae")
    assert mae.value == pytest.approx(2 * mae.evidence.reference["mae"], rel=0.15)


def test_one_million_stationary_labelled_events_raise_no_concept_alert() -> None:
    stream = error_rate_stream(1_000_000, change_at=1_000_000, before=0.1, after=0.1, seed=8)
    t = tracker(window=10_000, label_horizon_ms=0)
    assert replay(stream, t, batch=20_000) == []
    assert t.stats().fed == 1_000_000


def test_censored_labels_give_exact_coverage_and_counts() -> None:
    stream = error_rate_stream(
        20_000, change_at=20_000, before=0.1, after=0.1, max_delay=300, censor=0.3, seed=6
    )
    ttl = 5_000 * MS
    t = tracker(label_horizon_ms=300 * MS, label_ttl_ms=ttl, coverage_threshold=1.0)
    replay(stream, t)
    window = np.arange(20_000) // WINDOW
    labelled = np.bincount(window, weights=stream.labelled, minlength=10).astype(int)
    history = list(t.performance.history_)
    assert [int(h["window_start"]) // MS // WINDOW for h in history] == list(range(10))
    assert [int(h["labelled"]) for h in history] == labelled.tolist()
    assert [int(h["censored"]) for h in history] == (WINDOW - labelled).tolist()
    assert [h["coverage"] for h in history] == (labelled / WINDOW).tolist()
    stats = t.stats()
    assert stats.censored == int((~stream.labelled).sum()) and stats.joined == len(stream.outcomes)
    assert (stats.orphans, stats.pending_predictions, stats.pending_outcomes) == (0, 0, 0)


def test_low_coverage_window_alerts_provisionally_then_finally() -> None:
    stream = error_rate_stream(
        20_000, change_at=10_000, before=0.1, after=0.3, max_delay=300, censor=0.5, seed=9
    )
    t = tracker(
        label_horizon_ms=300 * MS,
        label_ttl_ms=4_000 * MS,
        coverage_threshold=0.9,
        reference_windows=2,
    )
    alerts = firing(replay(stream, t))
    provisional = [a for a in alerts if a.detector == "performance.error_rate.provisional"]
    final = [a for a in alerts if a.detector == "performance.error_rate"]
    assert provisional and provisional[0].provisional and provisional[0].severity.value == "warning"
    assert final and not final[0].provisional
    assert provisional[0].window_start == final[0].window_start == 10_000 * MS
    assert final[0].evidence.notes["status"] == "final"


def test_labels_later_than_the_horizon_are_late_not_fed() -> None:
    stream = error_rate_stream(
        10_000, change_at=10_000, before=0.1, after=0.1, max_delay=3_000, seed=5
    )
    t = tracker(label_horizon_ms=1_000 * MS)
    replay(stream, t)
    stats = t.stats()
    assert stats.late_labels > 0
    assert stats.fed + stats.late_labels == stats.joined == 10_000


def test_snapshot_restore_mid_join_gives_the_uninterrupted_alerts() -> None:
    stream = error_rate_stream(
        40_000, change_at=20_000, before=0.1, after=0.25, max_delay=3_000, seed=7
    )

    def run(cut: int | None) -> list:
        t = tracker(label_horizon_ms=3_000 * MS)
        alerts = []
        for k, step in enumerate(steps(stream, 1_000)):
            if k == cut:
                assert t.stats().pending_predictions > 0  # really in the middle of a join
                t = pickle.loads(pickle.dumps(t))
            t.observe_predictions(step.predictions)
            if step.outcomes is not None:
                t.observe_outcomes(step.outcomes)
            alerts += t.advance(step.watermark)
        return alerts + t.advance(10**12)

    whole = run(None)
    assert firing(whole)
    assert run(21) == whole


def test_config_rejects_bit_detectors_for_regression() -> None:
    with pytest.raises(ValueError, match="error bits"):
        ConceptConfig(task="regression", detectors=("ddm",))
    with pytest.raises(ValueError, match="unknown sequential detector"):
        ConceptConfig(detectors=("kswin",))
