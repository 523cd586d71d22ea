"""`driftwire alerts`: help, reading real alerts from a real broker, filters, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from driftwire.detectors.alerts import (
    Alert,
    AlertKind,
    Evidence,
    Severity,
    Status,
    make_alert_id,
)
from driftwire.schemas.records import alert_to_record
from driftwire.schemas.serde import Codec
from driftwire.streams.cli_alerts import parse_since

DOCS_SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "examples" / "page_on_critical.py"


def _alert(
    model: str,
    kind: AlertKind,
    feature: str | None,
    severity: Severity,
    status: Status = Status.FIRING,
    start: int = 60_000,
) -> Alert:
    return Alert(
        alert_id=make_alert_id(model, kind.value, "ks", feature, None, start, status.value),
        model_id=model,
        kind=kind,
        detector="ks",
        status=status,
        severity=severity,
        statistic="ks_d",
        value=0.3,
        threshold=1e-4,
        p_value=1e-9,
        window_start=start,
        window_end=start + 60_000,
        window_count=5000,
        reference_id="ref-1",
        feature=feature,
        evidence=Evidence(reference={"mean": 1.0}, current={"mean": 1.4}),
    )


ALERTS = [
    _alert("fraud", AlertKind.DATA_DRIFT, "amount", Severity.CRITICAL),
    _alert("fraud", AlertKind.DATA_QUALITY, "age", Severity.WARNING),
    _alert("reco", AlertKind.DATA_DRIFT, "price", Severity.WARNING),
    _alert("fraud", AlertKind.DATA_DRIFT, "amount", Severity.CRITICAL, Status.RESOLVED, 240_000),
]


def _run(*args: str, timeout: float = 60, stdin=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "driftwire.streams.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=stdin)


@pytest.fixture
def alerts_topic(kafka_bootstrap: str, make_topic) -> str:
    topic = make_topic(partitions=2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    codec = Codec("DriftAlert", "avro")
    for alert in ALERTS:
        producer.produce(topic, codec.encode(alert_to_record(alert)), key=alert.model_id)
    assert producer.flush(10) == 0
    return topic


def test_help_explains_the_options() -> None:
    result = _run("alerts", "--help")
    assert result.returncode == 0
    for option in ("--follow", "--json", "--from-beginning", "--since", "--model", "--kind"):
        assert option in result.stdout


@pytest.mark.kafka
def test_reads_every_alert_from_the_beginning_as_json(kafka_bootstrap: str, alerts_topic: str):
    result = _run(
        "alerts",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        alerts_topic,
        "--from-beginning",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(a["alert_id"] for a in got) == sorted(a.alert_id for a in ALERTS)


@pytest.mark.kafka
def test_filters_by_model_kind_and_severity(kafka_bootstrap: str, alerts_topic: str) -> None:
    result = _run(
        "alerts",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        alerts_topic,
        "--from-beginning",
        "--json",
        "--model",
        "fraud",
        "--kind",
        "data_drift",
        "--severity",
        "critical",
    )
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    # the critical firing alert and its resolution; not the warning, not the other model
    assert [(a["model_id"], a["status"]) for a in got] == [
        ("fraud", "firing"),
        ("fraud", "resolved"),
    ]


@pytest.mark.kafka
def test_human_output_names_model_feature_and_status(kafka_bootstrap, alerts_topic) -> None:
    result = _run(
        "alerts",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        alerts_topic,
        "--from-beginning",
        "--model",
        "reco",
    )
    assert result.returncode == 0, result.stderr
    assert "reco" in result.stdout and "price" in result.stdout and "firing" in result.stdout
    assert "fraud" not in result.stdout


@pytest.mark.kafka
def test_docs_script_reads_follow_json_as_written(kafka_bootstrap: str, alerts_topic: str):
    follow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftwire.streams.cli",
            "alerts",
            "--bootstrap",
            kafka_bootstrap,
            "--topic",
            alerts_topic,
            "--from-beginning",
            "--follow",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    script = subprocess.Popen(
        [sys.executable, str(DOCS_SCRIPT)], stdin=follow.stdout, stdout=subprocess.PIPE, text=True
    )
    follow.stdout.close()
    lines: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while len(lines) < 2 and time.monotonic() < deadline:
            line = script.stdout.readline()
            if line:
                lines.append(line.strip())
    finally:
        follow.terminate()
        follow.wait(10)
        script.wait(10)
    assert lines == [
        "PAGE fraud data_drift on amount: ks_d=0.3",
        "RESOLVED fraud data_drift on amount",
    ]


def test_unreachable_broker_fails_fast_with_a_clear_message() -> None:
    started = time.monotonic()
    result = _run("alerts", "--bootstrap", "127.0.0.1:1", "--timeout", "3", timeout=30)
    assert result.returncode == 2
    assert "cannot reach the broker" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 25


def test_missing_config_file_is_a_usage_error() -> None:
    result = _run("alerts", "--config", "/nonexistent/driftwire.yaml")
    assert result.returncode == 2
    assert "nonexistent" in result.stderr
    assert "Traceback" not in result.stderr


def test_since_accepts_iso_epoch_and_durations() -> None:
    now = 1_800_000_000_000
    assert parse_since("15m", now) == now - 900_000
    assert parse_since("1700000000000", now) == 1_700_000_000_000
    assert parse_since("2026-12-03T10:00:00+00:00", now) == 1_796_292_000_000
