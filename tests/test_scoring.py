"""Scoring: matching, delays, false alarms and the trivial baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
from driftwire.detectors.alerts import AlertKind, Status, Verdict, alert_from_verdict
from driftwire.detectors.scoring import (
    Alarm,
    ChangePoint,
    Window,
    always_firing,
    change_points_from_records,
    parse_time_ms,
    score_alerts,
    score_with_baselines,
)

W = 1000  # window size, ms


def _windows(n: int, model: str = "m", count: int = 100) -> list[Window]:
    return [Window(model, i * W, (i + 1) * W, count) for i in range(n)]


def _alert(window: int, feature: str | None, status: Status = Status.FIRING, model: str = "m"):
    verdict = Verdict(
        kind=AlertKind.DATA_DRIFT,
        detector="ks",
        statistic="ks_d",
        value=0.3,
        threshold=0.1,
        breached=True,
        window_start=window * W,
        window_end=(window + 1) * W,
        window_count=100,
        feature=feature,
    )
    return alert_from_verdict(verdict, status, model, "ref")


def test_delay_in_ms_and_events_from_first_matching_alert() -> None:
    truth = [ChangePoint("m", at=10_500, feature="x")]
    times = {"m": np.arange(0, 100_000, 10, dtype=np.int64)}  # 100 events per window
    alerts = [_alert(12, "x"), _alert(14, "x")]
    score = score_alerts(alerts, truth, _windows(100), times)
    det = score.detections[0]
    assert det.found and det.detected_at == 13_000
    assert det.delay_ms == 2_500
    assert det.delay_events == 250
    assert score.false_alarms == 0


def test_delay_events_estimated_from_window_counts_without_times() -> None:
    truth = [ChangePoint("m", at=10_500, feature="x")]
    score = score_alerts([_alert(12, "x")], truth, _windows(100))
    assert score.detections[0].delay_events == 250


def test_alerts_before_the_change_or_on_other_scopes_are_false_alarms() -> None:
    truth = [ChangePoint("m", at=50_000, feature="x")]
    alerts = [
        _alert(10, "x"),  # before the change
        _alert(60, "y"),  # wrong feature
        _alert(70, "x", model="other"),  # wrong model
        _alert(55, "x"),  # the detection
        _alert(58, "x", Status.RESOLVED),  # resolved events are not alarms
    ]
    score = score_alerts(alerts, truth, _windows(100))
    assert score.found == 1 and score.detections[0].detected_at == 56_000
    assert score.false_alarms == 3
    assert score.false_alarms_per_1000_windows == pytest.approx(30.0)
    assert score.mtbfa_windows == pytest.approx(100 / 3)
    assert score.mtbfa_ms == pytest.approx(100 * W / 3)


def test_kind_restricts_matching() -> None:
    truth = [ChangePoint("m", at=0, kind="concept_drift")]
    score = score_alerts([_alert(3, "x")], truth, _windows(10))
    assert score.missed == 1 and score.false_alarms == 1


def test_missed_change_and_max_delay() -> None:
    truth = [ChangePoint("m", at=10_000, feature="x"), ChangePoint("m", at=80_000, feature="z")]
    score = score_alerts([_alert(40, "x")], truth, _windows(100), max_delay_ms=20_000)
    assert [d.found for d in score.detections] == [False, False]
    assert score.false_alarms == 1  # too late to be explained by the change
    assert score.recall == 0.0
    unlimited = score_alerts([_alert(40, "x")], truth, _windows(100))
    assert unlimited.detections[0].delay_ms == 31_000


def test_next_change_of_the_same_scope_closes_the_horizon() -> None:
    truth = [ChangePoint("m", at=10_000, feature="x"), ChangePoint("m", at=50_000, feature="x")]
    score = score_alerts([_alert(60, "x")], truth, _windows(100))
    assert [d.found for d in score.detections] == [False, True]


def test_always_firing_baseline_is_worse_on_false_alarms_and_never_firing_finds_nothing() -> None:
    truth = [ChangePoint("m", at=30_000, feature="x"), ChangePoint("m", at=60_000, feature="y")]
    card = score_with_baselines([_alert(31, "x"), _alert(62, "y")], truth, _windows(100))
    assert card.detector.found == 2 and card.detector.false_alarms == 0
    # one alarm per window per scope: x wrong in windows 0..29, y wrong in 0..59
    assert card.always.false_alarms == 30 + 60
    assert card.always.found == 2
    assert [d.delay_ms for d in card.always.detections] == [1000, 1000]
    assert card.never.found == 0 and card.never.false_alarms == 0
    assert math.isinf(card.never.mtbfa_ms)
    assert card.never.summary()["mtbfa_ms"] is None


def test_always_firing_only_for_the_models_in_the_truth() -> None:
    windows = _windows(5, "a") + _windows(5, "b")
    alarms = always_firing([ChangePoint("a", at=0, feature="x")], windows)
    assert {a.model_id for a in alarms} == {"a"} and len(alarms) == 5


def test_truth_records_parse_iso_and_ms() -> None:
    truth = change_points_from_records(
        [
            {"model": "m", "at": "2026-12-01T00:00:00Z", "feature": "x", "label": "deploy"},
            {"model": "m", "at": 5, "kind": "concept_drift", "feature": None},
        ]
    )
    assert [(c.at, c.kind, c.feature) for c in truth] == [
        (5, "concept_drift", None),
        (parse_time_ms("2026-12-01T00:00:00+00:00"), None, "x"),
    ]
    assert parse_time_ms("2026-12-01T01:00:00") - truth[1].at == 3_600_000


def test_alarm_dataclass_scores_like_alerts() -> None:
    truth = [ChangePoint("m", at=5_000, feature="x")]
    score = score_alerts([Alarm("m", "data_drift", "x", 5000, 6000)], truth, _windows(10))
    assert score.detections[0].delay_ms == 1000
