"""Worker crashes and rebalances against the real broker: the alert ids never change.

Every test runs the shared scenario (:func:`workerkit.build_scenario`) and compares the
alert ids on the alerts topic with the ids the same engine gives in-process. The
guarantee under test is *at-least-once publication with deterministic ids*: a crash may
re-send an alert, never lose one, never invent one.

SIGKILL runs: ``DRIFTWIRE_FAULT_RUNS`` seeded runs (3 by default, 20 for the full
count), each killing the worker at a random point of one of three kinds, then
restarting it to the end:

- ``batch``: once a random share of the features has been consumed (mid batch loop);
- ``alert``: right after the k-th alert was logged -- produced, but the checkpoint that
  covers it not yet written or the group offset not yet committed;
- ``checkpoint``: right after the k-th checkpoint record landed on the checkpoint
  topic -- before the group offset commit that follows it;
- ``loop`` (from run 4 on): a crash loop -- three kills 1-4 s after each (re)start.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from workerkit import (
    Scenario,
    WorkerProc,
    build_scenario,
    consumed,
    read_alerts,
    run_id,
    shape,
    start_worker,
    stop,
    wait_for_alerts,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

FAULT_RUNS = int(os.environ.get("DRIFTWIRE_FAULT_RUNS", "3"))
KINDS = ("batch", "alert", "checkpoint", "loop")
SCENARIO_MS = 140_000
ALERT_LINE = re.compile(rb" alert [0-9a-f]{32} ")


@pytest.fixture(scope="module")
def scenario(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    # 140 s of event time: the missing-value spike, the x3 shift and the error-rate step
    # (concept drift) are in; the x0/x1 shift at 150 s is left to test_worker_kafka
    return build_scenario(kafka_bootstrap, tmp_path_factory.mktemp("faults"), SCENARIO_MS)


def _alerts_logged(log: Path) -> int:
    return len(ALERT_LINE.findall(log.read_bytes())) if log.exists() else 0


class CheckpointWatch:
    """End offset of a worker's checkpoint topic, polled cheaply."""

    def __init__(self, bootstrap: str, app_id: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watch"})
        self.tp = TopicPartition(f"{app_id}-checkpoints", 0)

    def records(self) -> int:
        try:
            return self.consumer.get_watermark_offsets(self.tp, timeout=2)[1]
        except KafkaException:  # not created yet
            return 0

    def close(self) -> None:
        self.consumer.close()


def _kill_point(kind: str, rng: np.random.Generator, scn: Scenario):
    """A predicate on the running worker that is true at the chosen crash point."""
    if kind == "batch":
        share = rng.uniform(0.1, 0.9)
        return (
            f"after {share:.0%} of features",
            lambda w, log, cp: consumed(w, scn) >= share * scn.valid,
        )
    if kind == "alert":
        k = int(rng.integers(1, 1 + len(scn.expected_ids) // 2))
        return f"after alert #{k}", lambda w, log, cp: _alerts_logged(log) >= k
    if kind == "checkpoint":
        k = int(rng.integers(2, 30))
        return f"after checkpoint #{k}", lambda w, log, cp: cp.records() >= k
    delays = iter(rng.uniform(1, 4, 3).tolist())
    return "in a crash loop", lambda w, log, cp: _after(w, next(delays))


def _owns_features(worker: WorkerProc, scn: Scenario) -> bool:
    """The worker was assigned a features partition (its /health lists them)."""
    try:
        url = f"http://127.0.0.1:{worker.port}/health"
        body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    except (OSError, ValueError):  # not up yet, or 503 while starting
        return False
    return any(key.startswith(f"{scn.features}:") for key in body["assigned"])


def _after(worker: WorkerProc, seconds: float) -> bool:
    """Blocks `seconds` once, then true: a kill at a fixed delay after start."""
    time.sleep(seconds)
    return True


def _kill_when(worker: WorkerProc, log: Path, watch: CheckpointWatch, due) -> None:
    try:
        wait_until(lambda: due(worker, log, watch) or worker.proc.poll() is not None, 90, 0.01)
        exited = worker.proc.poll()
    finally:
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)
    assert exited is None, f"the worker exited by itself (code {exited}) before the kill"


@pytest.mark.parametrize("run", range(FAULT_RUNS))
def test_sigkill_at_a_random_point_then_restart_gives_the_same_alert_ids(
    scenario: Scenario, run: int
) -> None:
    rng = np.random.default_rng(9_000 + run)
    kind = KINDS[run % len(KINDS)]
    where, due = _kill_point(kind, rng, scenario)
    app_id = run_id()
    alerts_topic = f"{app_id}-alerts"
    config = scenario.config(app_id, alerts_topic)
    for i in range(3 if kind == "loop" else 1):
        log = scenario.workdir / f"{app_id}-victim-{i}.log"
        watch = CheckpointWatch(scenario.bootstrap, app_id)
        try:
            _kill_when(start_worker(config, log), log, watch, due)
        finally:
            watch.close()
    before = {a.alert_id for a in read_alerts(scenario.bootstrap, alerts_topic)}
    assert before < scenario.expected_ids, f"{kind} {where}: the kill came too late"
    survivor = start_worker(config, scenario.workdir / f"{app_id}-survivor.log")
    try:
        alerts = wait_for_alerts(scenario, alerts_topic)
    finally:
        assert stop(survivor) == 0
    assert {a.alert_id for a in alerts} == scenario.expected_ids, f"run {run}: {kind} {where}"
    assert {shape(a) for a in alerts} == scenario.expected


def test_scaling_from_one_to_three_workers_and_back_keeps_the_alert_ids(
    scenario: Scenario,
) -> None:
    app_id = run_id()
    alerts_topic = f"{app_id}-alerts"
    config = scenario.config(app_id, alerts_topic)
    logs = [scenario.workdir / f"{app_id}-{i}.log" for i in range(3)]
    first = start_worker(config, logs[0])
    extra: list[WorkerProc] = []
    try:
        # scale out as soon as the first worker consumes: starting two more processes takes
        # seconds, and waiting for 10% let a fast first worker finish the stream first
        wait_until(lambda: consumed(first, scenario) > 0, 90, 0.02)
        extra = [start_worker(config, log) for log in logs[1:]]  # 1 -> 3
        wait_until(lambda: all(_owns_features(w, scenario) for w in extra), 60, 0.1)
        before = {a.alert_id for a in read_alerts(scenario.bootstrap, alerts_topic)}
        codes = [stop(w) for w in extra]  # 3 -> 1, gracefully (revoke -> checkpoint)
        extra = []
        alerts = wait_for_alerts(scenario, alerts_topic)
    finally:
        codes_last = [stop(w) for w in [first, *extra]]
    assert codes == [0, 0] and codes_last[0] == 0
    assert before < scenario.expected_ids, "the rebalance must happen mid-stream"
    assert {a.alert_id for a in alerts} == scenario.expected_ids
    assert {shape(a) for a in alerts} == scenario.expected
