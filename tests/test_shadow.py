"""Champion / challenger: shifted challengers are flagged, identical ones are not."""

from __future__ import annotations

import pickle

import numpy as np
from driftwire.detectors.alerts import AlertKind, Status
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.config import ModelConfig, ShadowConfig, WindowConfig
from driftwire.detectors.shadow import ShadowComparator, challengers_of

WINDOW = 10_000
N_WINDOWS = 20
RATE = 0.5  # events per ms


def _comparator(**shadow) -> ShadowComparator:
    cfg = ModelConfig(
        id="fraud-v2",
        window=WindowConfig(size=WINDOW, allowed_lateness=100),
        shadow=ShadowConfig(champion="fraud-v1", **shadow),
    )
    return ShadowComparator(cfg)


def _events(seed=0):
    """Ids, times, true class and the champion's score over N_WINDOWS windows."""
    rng = np.random.default_rng(seed)
    n = int(N_WINDOWS * WINDOW * RATE)
    t = np.sort(rng.integers(0, N_WINDOWS * WINDOW, n)).astype(np.int64)
    ids = np.array([f"p{i}" for i in range(n)], dtype=object)
    truth = rng.random(n) < 0.5
    score = np.clip(np.where(truth, 0.7, 0.3) + rng.normal(0, 0.15, n), 0, 1)
    return rng, ids, t, truth, score


def _run(cmp, champ: FeatureBatch, chall: FeatureBatch, outcomes=None, step=2_000):
    """Feed both models (and outcomes) in event-time slices, advancing as we go."""
    alerts = []
    for lo in range(0, N_WINDOWS * WINDOW + 2 * WINDOW, step):
        sel = (champ.event_time >= lo) & (champ.event_time < lo + step)
        cmp.observe_champion(champ.take(sel))
        cmp.observe_challenger(chall.take(sel))
        if outcomes is not None:
            cmp.observe_outcomes(
                outcomes.take((outcomes.event_time >= lo) & (outcomes.event_time < lo + step))
            )
        alerts += cmp.advance(lo + step - 1)
    return alerts


def _fired(alerts, detector):
    return [a for a in alerts if a.detector == detector and a.status is Status.FIRING]


def test_shifted_challenger_scores_are_flagged():
    _, ids, t, _, score = _events()
    champ = FeatureBatch("fraud-v1", ids, t, score=score)
    chall = FeatureBatch("fraud-v2", ids, t, score=np.clip(score + 0.1, 0, 1))
    cmp = _comparator()
    alerts = _run(cmp, champ, chall)
    fired = _fired(alerts, "ks")
    assert len(fired) == 1 and fired[0].window_start == 0  # firing once, then stays firing
    assert fired[0].kind is AlertKind.SHADOW_DIVERGENCE and fired[0].model_id == "fraud-v2"
    assert fired[0].evidence.notes["champion"] == "fraud-v1"
    assert fired[0].value > 0.1 and fired[0].p_value < 1e-10


def test_identical_and_nearly_identical_challengers_are_quiet():
    rng, ids, t, _, score = _events(1)
    champ = FeatureBatch("fraud-v1", ids, t, score=score)
    for chall_score in (score, np.clip(score + rng.normal(0, 0.005, len(score)), 0, 1)):
        cmp = _comparator()
        alerts = _run(cmp, champ, FeatureBatch("fraud-v2", ids, t, score=chall_score))
        assert alerts == []
        assert cmp.counters_.paired == len(ids) and cmp.counters_.unpaired_dropped == 0


def test_challenger_scoring_a_little_later_is_still_paired_across_window_edges():
    _, ids, t, _, score = _events(2)
    champ = FeatureBatch("fraud-v1", ids, t, score=score)
    chall = FeatureBatch("fraud-v2", ids, t + 30, score=score)  # shadow answers 30 ms later
    cmp = _comparator()
    assert _run(cmp, champ, chall) == []
    assert cmp.counters_.paired == len(ids)


def _classifier_run(err_champion, err_challenger, seed):
    rng, ids, t, truth, _ = _events(seed)
    y = np.where(truth, "fraud", "ok")

    def predict(err):
        flip = rng.random(len(y)) < err
        return np.where(flip, np.where(truth, "ok", "fraud"), y).astype(object)

    champ = FeatureBatch("fraud-v1", ids, t, label=predict(err_champion))
    chall = FeatureBatch("fraud-v2", ids, t, label=predict(err_challenger))
    outcomes = OutcomeBatch("fraud-v1", ids, t + 50, y.astype(object))  # labels 50 ms later
    cmp = _comparator()
    return cmp, _run(cmp, champ, chall, outcomes)


def test_worse_challenger_on_the_same_events_is_flagged_by_mcnemar():
    cmp, alerts = _classifier_run(0.10, 0.20, seed=3)
    fired = _fired(alerts, "mcnemar")
    assert len(fired) == 1 and fired[0].evidence.notes["better"] == "champion"
    assert fired[0].value < -0.05 and fired[0].feature == "performance"
    assert not _fired(alerts, "chi2")  # same predicted class mix: no label divergence
    assert cmp.counters_.outcomes_joined == cmp.counters_.paired == 100_000


def test_equally_good_challenger_is_quiet():
    cmp, alerts = _classifier_run(0.10, 0.10, seed=4)
    assert alerts == [] and cmp.counters_.outcomes_joined > 90_000


def test_challenger_predicting_another_class_mix_is_flagged_by_chi2():
    rng, ids, t, truth, _ = _events(5)
    champ = FeatureBatch("fraud-v1", ids, t, label=np.where(truth, "fraud", "ok").astype(object))
    skew = truth | (rng.random(len(ids)) < 0.2)
    chall = FeatureBatch("fraud-v2", ids, t, label=np.where(skew, "fraud", "ok").astype(object))
    fired = _fired(_run(_comparator(), champ, chall), "chi2")
    assert len(fired) == 1 and fired[0].evidence.current["agreement"] < 0.95


def test_state_pickles_mid_stream_and_routing_helper():
    _, ids, t, _, score = _events(6)
    champ = FeatureBatch("fraud-v1", ids, t, score=score)
    chall = FeatureBatch("fraud-v2", ids, t, score=np.clip(score * 0.8, 0, 1))
    cmp = _comparator()
    cmp.observe_champion(champ.take(t < 15_000))
    clone = pickle.loads(pickle.dumps(cmp))
    for c in (cmp, clone):
        c.observe_challenger(chall.take(t < 15_000))
    assert [a.alert_id for a in cmp.advance(10_200)] == [a.alert_id for a in clone.advance(10_200)]
    models = [ModelConfig(id="a"), ModelConfig(id="b", shadow=ShadowConfig(champion="a"))]
    assert challengers_of(models) == {"a": ["b"]}
