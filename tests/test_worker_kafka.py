"""`driftwire worker` against a real broker: alerts, dead letters, two workers, SIGKILL.

One module-scoped scenario (:func:`workerkit.build_scenario`) is produced once: 200,000
FeatureEvents of two models over a 4-partition topic, with outcomes, 1% malformed
messages and a few events of an unknown model; the expected alerts come from the same
engine run in-process. The worker runs as a subprocess so SIGKILL is real.
"""

from __future__ import annotations

import json
import signal

import pytest
from driftwire.streams import dlq
from workerkit import (
    PARTITIONS,
    Scenario,
    build_scenario,
    consumed,
    read_alerts,
    read_topic,
    run_id,
    shape,
    start_worker,
    stop,
    wait_for_alerts,
    wait_until,
)

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def scenario(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return build_scenario(kafka_bootstrap, tmp_path_factory.mktemp("worker"))


# -- the tests ---------------------------------------------------------------------------------


def test_one_worker_publishes_exactly_the_expected_alerts(scenario: Scenario) -> None:
    app_id = run_id()
    alerts_topic = f"{app_id}-alerts"
    worker = start_worker(scenario.config(app_id, alerts_topic), scenario.workdir / "one.log")
    try:
        alerts = wait_for_alerts(scenario, alerts_topic)
        metrics = worker.metrics()
        assert worker.health() == 200
    finally:
        assert stop(worker) == 0
    # the scenario must really contain every kind of drift it claims to
    kinds = {(kind, feat) for _, kind, _, feat, st, _ in scenario.expected if st == "firing"}
    assert {("data_quality", "x5"), ("data_drift", "x3"), ("data_drift", "x0")} <= kinds
    assert ("concept_drift", None) in kinds
    assert any(k == "prediction_drift" for k, _ in kinds)
    assert {shape(a) for a in alerts} == scenario.expected
    assert len(alerts) == len({a.alert_id for a in alerts}) == len(scenario.expected_ids)
    assert not [a for a in alerts if a.model_id == "control"]
    assert {a.partitions_reported for a in alerts} == {2 * PARTITIONS}  # features + outcomes
    # every message accounted for: valid ones decoded, the bad ones dead-lettered
    features = f'{{topic="{scenario.features}"}}'
    total = scenario.valid + len(scenario.bad) + len(scenario.unknown)
    assert metrics[f"driftwire_events_in_total{features}"] == total
    assert metrics[f"driftwire_events_decoded_total{features}"] == total - len(scenario.bad)
    assert metrics['driftwire_events_dead_lettered_total{reason="decode_error"}'] == len(
        scenario.bad
    )
    assert metrics['driftwire_events_dead_lettered_total{reason="unknown_model"}'] == len(
        scenario.unknown
    )
    assert metrics[f"driftwire_events_profiled_total{features}"] == scenario.valid
    assert metrics[f"driftwire_events_late_total{features}"] == 0
    outcomes = f'{{topic="{scenario.outcomes}"}}'
    assert metrics[f"driftwire_events_profiled_total{outcomes}"] == scenario.n_outcomes
    lag = [k for k in metrics if k.startswith("driftwire_consumer_lag{") and features[1:-1] in k]
    assert len(lag) == PARTITIONS  # consumer lag per features partition, from librdkafka stats
    assert metrics["driftwire_batch_seconds_count"] > 0
    _check_dead_letters(scenario, f"{app_id}-dead-letter")


def _check_dead_letters(scn: Scenario, topic: str) -> None:
    letters = list(read_topic(scn.bootstrap, topic))
    where = {}
    for msg in letters:
        headers = dict(msg.headers())
        assert headers[dlq.SOURCE_TOPIC].decode() == scn.features
        assert headers[dlq.REASON]
        key = (int(headers[dlq.SOURCE_PARTITION]), int(headers[dlq.SOURCE_OFFSET]))
        where[key] = (headers[dlq.ERROR].decode(), msg.value())
    assert len(letters) == len(where)  # no duplicates
    assert {k for k, (e, _) in where.items() if e == "decode_error"} == scn.bad
    assert {k for k, (e, _) in where.items() if e == "unknown_model"} == scn.unknown
    # the original bytes, untouched
    originals = _originals(scn, set(where))
    assert all(where[k][1] == originals[k] for k in where)


def _originals(scn: Scenario, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    return {
        (m.partition(), m.offset()): m.value()
        for m in read_topic(scn.bootstrap, scn.features)
        if (m.partition(), m.offset()) in wanted
    }


def test_two_workers_publish_the_same_alert_ids_as_one(scenario: Scenario) -> None:
    app_id = run_id()
    alerts_topic = f"{app_id}-alerts"
    config = scenario.config(app_id, alerts_topic)
    first = start_worker(config, scenario.workdir / "two-a.log")
    second = start_worker(config, scenario.workdir / "two-b.log")
    try:
        alerts = wait_for_alerts(scenario, alerts_topic)
        shares = [consumed(w, scenario) for w in (first, second)]
    finally:
        codes = [stop(first), stop(second)]
    assert codes == [0, 0]
    assert all(s > 0 for s in shares), f"both workers must have consumed features: {shares}"
    assert {a.alert_id for a in alerts} == scenario.expected_ids
    assert {shape(a) for a in alerts} == scenario.expected


def test_sigkill_mid_stream_then_restart_gives_the_same_alert_ids(scenario: Scenario) -> None:
    app_id = run_id()
    alerts_topic = f"{app_id}-alerts"
    config = scenario.config(app_id, alerts_topic)
    victim = start_worker(config, scenario.workdir / "kill-1.log")
    try:
        wait_until(lambda: consumed(victim, scenario) >= 80_000, timeout=90, every=0.05)
    finally:
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
    before = read_alerts(scenario.bootstrap, alerts_topic)
    assert {a.alert_id for a in before} < scenario.expected_ids  # really mid-stream
    survivor = start_worker(config, scenario.workdir / "kill-2.log")
    try:
        alerts = wait_for_alerts(scenario, alerts_topic)
        resumed = survivor.metrics()
    finally:
        assert stop(survivor) == 0
    # at-least-once publication with deterministic ids: re-sent alerts repeat an id, never a new one
    assert {a.alert_id for a in alerts} == scenario.expected_ids
    assert {shape(a) for a in alerts} == scenario.expected
    # the restart resumed from a checkpoint instead of re-reading the whole topic
    consumed_again = resumed[f'driftwire_events_in_total{{topic="{scenario.features}"}}']
    assert consumed_again < scenario.valid


def test_sigterm_finishes_the_batch_checkpoints_and_resumes_without_replay(
    scenario: Scenario,
) -> None:
    app_id = run_id()
    alerts_topic = f"{app_id}-alerts"
    config = scenario.config(app_id, alerts_topic)
    first = start_worker(config, scenario.workdir / "term-1.log")
    try:
        wait_until(lambda: consumed(first, scenario) >= 80_000, timeout=90, every=0.05)
    finally:
        assert stop(first) == 0
    saved = {
        m.key().decode(): json.loads(m.value())["offset"]
        for m in read_topic(scenario.bootstrap, f"{app_id}-checkpoints")
    }
    resumed_from = sum(saved.get(f"{scenario.features}:{p}", 0) for p in range(PARTITIONS))
    assert resumed_from >= 80_000
    second = start_worker(config, scenario.workdir / "term-2.log")
    try:
        alerts = wait_for_alerts(scenario, alerts_topic)
        consumed_again = consumed(second, scenario)
    finally:
        assert stop(second) == 0
    total = scenario.valid + len(scenario.bad) + len(scenario.unknown)
    assert consumed_again == total - resumed_from  # nothing read twice
    assert sorted(a.alert_id for a in alerts) == sorted(scenario.expected_ids)  # no re-sends
