"""Broker outage: stop the broker mid-stream for 30 s and start it again.

A broker of its own (not the session one, which other tests share), on a fixed port so
the restarted broker is found at the same address, with its data dir and cluster id
kept across the restart. The worker must ride the outage out by itself: report it on
/health (503) and /metrics (``driftwire_broker_up 0``) while the broker is down,
reconnect when it is back, and publish exactly the alert ids of an undisturbed run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from driftwire.streams.broker import BrokerError, LocalBroker, MissingToolError, free_port
from workerkit import (
    Scenario,
    WorkerProc,
    build_scenario,
    consumed,
    run_id,
    shape,
    start_worker,
    stop,
    wait_for_alerts,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

OUTAGE_S = float(os.environ.get("DRIFTWIRE_OUTAGE_SECONDS", "30"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(tmp_path_factory.mktemp("outage-broker"), port=free_port())
    try:
        broker.start(timeout=120)
    except (MissingToolError, BrokerError) as exc:
        pytest.fail(f"outage broker did not start: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


def _health(worker: WorkerProc) -> tuple[int, dict]:
    try:
        reply = urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/health", timeout=5)
        return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _log_tail(workdir, lines: int = 80) -> str:
    """The worker's log without librdkafka's reconnect noise: why it did not recover."""
    text = (workdir / "outage.log").read_text(errors="replace").splitlines()
    kept = [line for line in text if "Connect to ipv4" not in line and " alert " not in line]
    return "worker log:\n" + "\n".join(kept[-lines:])


def test_a_30s_broker_outage_mid_stream_changes_no_alert_id(
    broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert broker.bootstrap
    scn: Scenario = build_scenario(broker.bootstrap, tmp_path_factory.mktemp("outage"), 140_000)
    app_id = run_id()
    alerts_topic = f"{app_id}-alerts"
    worker = start_worker(scn.config(app_id, alerts_topic), scn.workdir / "outage.log")
    try:
        wait_until(lambda: consumed(worker, scn) >= 0.3 * scn.valid, 90, 0.02)
        broker.stop()
        down_at = time.monotonic()
        # while it is down, health and metrics say so
        wait_until(lambda: _health(worker)[0] == 503, OUTAGE_S - 5, 0.5)
        status, body = _health(worker)
        metrics = worker.metrics()
        assert body["broker_up"] is False and status == 503
        assert metrics["driftwire_broker_up"] == 0
        assert metrics['driftwire_kafka_errors_total{code="_ALL_BROKERS_DOWN"}'] >= 1
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
        assert worker.proc.poll() is None, "the worker must wait for the broker, not exit"
        broker.start(timeout=120)
        alerts = wait_for_alerts(scn, alerts_topic, timeout=180)
        if {a.alert_id for a in alerts} != scn.expected_ids and worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGUSR1)  # the stacks go to the worker's log
            time.sleep(1)
        assert {a.alert_id for a in alerts} == scn.expected_ids, _log_tail(scn.workdir)
        wait_until(lambda: _health(worker)[0] == 200, 30, 0.5)  # reconnected on its own
        assert worker.metrics()["driftwire_broker_up"] == 1
    finally:
        code = stop(worker)
    assert code == 0
    assert {shape(a) for a in alerts} == scn.expected


def test_a_consumer_out_of_its_group_too_long_is_replaced_and_nothing_changes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The watchdog for librdkafka's stuck rejoins: forced here (a real stuck client cannot be
    made on demand), it swaps the consumer mid-stream; the alerts are those of a quiet run."""
    from driftwire.detectors.config import load_config
    from driftwire.streams.app import Worker, build_engines
    from driftwire.streams.config import StreamsConfig

    scn = build_scenario(kafka_bootstrap, tmp_path, 140_000)
    app_id = run_id()
    config = scn.config(app_id, f"{app_id}-alerts")
    streams = StreamsConfig.load(config)
    worker = Worker(streams, build_engines(load_config(config), streams))
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    try:
        features = worker.metrics.events_in.labels(topic=scn.features)
        wait_until(lambda: features._value.get() >= 0.3 * scn.valid, 90, 0.02)
        worker.group_watch.out_since_ = time.monotonic() - 3600  # "out of the group for 1 h"
        wait_until(lambda: worker.metrics.consumer_replaced._value.get() == 1, 30, 0.1)
        assert features._value.get() < scn.valid, "replaced mid-stream, not after it"
        alerts = wait_for_alerts(scn, f"{app_id}-alerts", timeout=180)
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert {a.alert_id for a in alerts} == scn.expected_ids
    assert {shape(a) for a in alerts} == scn.expected
