"""Joiner: either arrival order, TTL censoring, orphans, duplicates, memory bound, losses."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.concept import ConceptConfig
from driftwire.detectors.join import JoinCounts, Joiner, class_names


def obj(*values: object) -> np.ndarray:
    return np.array(values, dtype=object)


def preds(ids, times, labels=None, scores=None) -> FeatureBatch:
    return FeatureBatch(
        "m",
        obj(*ids),
        np.array(times, dtype=np.int64),
        label=None if labels is None else obj(*labels),
        score=None if scores is None else np.array(scores, dtype=float),
    )


def outs(ids, times, labels) -> OutcomeBatch:
    label = np.array(labels, dtype=float) if isinstance(labels[0], float) else obj(*labels)
    return OutcomeBatch("m", obj(*ids), np.array(times, dtype=np.int64), label)


def joiner(**kw) -> Joiner:
    kw.setdefault("label_ttl_ms", 1_000)
    kw.setdefault("label_horizon_ms", 0)
    return Joiner(ConceptConfig(**kw), window_ms=100)


def test_either_arrival_order_joins_the_same_records() -> None:
    p = preds(["a", "b", "c"], [10, 20, 130], labels=["1", "0", "1"])
    o = outs(["a", "b", "c"], [500, 600, 700], ["1", "1", "0"])
    first = joiner()
    j1 = first.observe_predictions(p)
    j2 = first.observe_outcomes(o)
    second = joiner()
    k1 = second.observe_outcomes(o)
    k2 = second.observe_predictions(p)
    assert len(j1) == 0 and len(k1) == 0
    assert j2.prediction_id.tolist() == k2.prediction_id.tolist() == ["a", "b", "c"]
    assert j2.loss.tolist() == k2.loss.tolist() == [0.0, 1.0, 1.0]
    assert j2.event_time.tolist() == [10, 20, 130]
    assert first.pending_predictions == second.pending_outcomes == 0


def test_ttl_censors_per_window_and_orphans_are_counted() -> None:
    j = joiner(orphan_grace_ms=200)
    j.observe_predictions(preds(["a", "b", "c", "d"], [10, 20, 150, 260], labels=["1"] * 4))
    j.observe_outcomes(outs(["b", "zz"], [300, 310], ["1", "0"]))
    # window [0,100) deadline 100 + 1000; orphan "zz" (window 300) waits until 300+100+200
    assert j.advance(599).counts == JoinCounts()
    assert j.advance(600).counts.orphans == 1
    assert j.advance(1_099).counts == JoinCounts()
    assert j.advance(1_100).counts.censored == {0: 1}  # "a"; "b" was labelled
    assert j.advance(1_250).counts.censored == {100: 1}
    late = j.observe_outcomes(outs(["c"], [1_300], ["1"]))  # its prediction already censored
    assert len(late) == 0 and j.pending_outcomes == 1
    assert j.advance(10_000).counts == JoinCounts(censored={200: 1}, orphans=1)
    assert j.pending_predictions == j.pending_outcomes == 0


def test_duplicates_and_memory_bound_are_reported() -> None:
    j = joiner(max_pending=3)
    first = j.observe_predictions(preds(["a", "b", "a"], [10, 20, 30], labels=["1"] * 3))
    assert first.counts.duplicates == 1 and first.counts.predictions == {0: 3}
    over = j.observe_predictions(preds(["c", "d", "e"], [110, 120, 230], labels=["1"] * 3))
    # 5 waiting > 3: the oldest window (a, b) is expired early, as censored and evicted
    assert over.counts.censored == {0: 2} and over.counts.evicted == {0: 2}
    assert j.pending_predictions == 3


def test_binary_error_from_positive_class_and_score_threshold() -> None:
    j = joiner(positive_class="fraud", decision_threshold=0.7)
    j.observe_predictions(
        preds(
            ["a", "b", "c", "d"],
            [1, 2, 3, 4],
            labels=[None, None, "fraud", "ok"],
            scores=[0.8, 0.6, 0.1, 0.9],
        )
    )
    out = j.observe_outcomes(outs(["a", "b", "c", "d"], [5] * 4, ["fraud", "fraud", "ok", "ok"]))
    # a: 0.8 >= 0.7 -> fraud (right); b: 0.6 -> not fraud (wrong); c: label wins (wrong); d right
    assert out.loss.tolist() == [0.0, 1.0, 1.0, 0.0]


def test_multiclass_and_label_normalisation() -> None:
    j = joiner(task="multiclass")
    j.observe_predictions(preds(["a", "b", "c"], [1, 2, 3], labels=[1, "2", 3.0]))
    out = j.observe_outcomes(outs(["a", "b", "c"], [5, 5, 5], [1.0, 2.0, 2.0]))
    assert out.loss.tolist() == [0.0, 0.0, 1.0]
    assert class_names(np.array([1.0, 2.5, np.nan])).tolist() == ["1", "2.5", ""]
    assert class_names(obj(True, None, 3)).tolist() == ["1", "", "3"]


@pytest.mark.parametrize(("loss", "expected"), [("absolute", [0.5, 2.0]), ("squared", [0.25, 4.0])])
def test_regression_losses(loss: str, expected: list[float]) -> None:
    j = joiner(task="regression", loss=loss)
    j.observe_predictions(preds(["a", "b"], [1, 2], scores=[1.5, 3.0]))
    out = j.observe_outcomes(outs(["a", "b"], [5, 5], [1.0, 5.0]))
    assert out.loss.tolist() == expected


def test_joiner_pickles_mid_join() -> None:
    j = joiner()
    j.observe_predictions(preds(["a", "b"], [1, 2], labels=["1", "0"]))
    j.observe_outcomes(outs(["zz"], [3], ["1"]))
    k = pickle.loads(pickle.dumps(j))
    for x in (j, k):
        out = x.observe_outcomes(outs(["b"], [4], ["1"]))
        assert out.prediction_id.tolist() == ["b"] and out.loss.tolist() == [1.0]
        assert (x.pending_predictions, x.pending_outcomes) == (1, 1)


def test_counts_merge_across_joiners() -> None:
    a = JoinCounts(predictions={0: 2}, censored={0: 1}, orphans=1)
    a.merge(JoinCounts(predictions={0: 3, 100: 1}, evicted={0: 1}, duplicates=2))
    assert a == JoinCounts({0: 5, 100: 1}, {0: 1}, {0: 1}, orphans=1, duplicates=2)


def test_storage_is_compacted_and_late_rows_still_join() -> None:
    j = joiner(label_ttl_ms=10**9)
    n = 50_000
    ids = [f"p{i}" for i in range(n)]
    for start in range(0, n, 5_000):
        part = slice(start, start + 5_000)
        j.observe_predictions(
            preds(ids[part], list(range(start, start + 5_000)), labels=["1"] * 5_000)
        )
    keep = set(range(0, n, 100))  # one in a hundred still waits for its label
    done = [i for i in range(n) if i not in keep]
    j.observe_outcomes(outs([ids[i] for i in done], [n] * len(done), ["1"] * len(done)))
    j.advance(n)
    assert sum(len(c.event_time) for c in j.chunks_.values()) == len(keep)
    late = sorted(keep)[::7]
    out = j.observe_outcomes(outs([ids[i] for i in late], [n] * len(late), ["0"] * len(late)))
    assert out.event_time.tolist() == late and out.loss.tolist() == [1.0] * len(late)
