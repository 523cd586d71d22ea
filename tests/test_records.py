"""Alert <-> DriftAlert record conversion, through every wire format."""

from __future__ import annotations

import doctest
import subprocess
import sys
from dataclasses import fields

import pytest
from driftwire.detectors.alerts import (
    Alert,
    AlertKind,
    AlertLifecycle,
    AlertPolicy,
    Evidence,
    Severity,
    Status,
    Verdict,
)
from driftwire.schemas import records as records_module
from driftwire.schemas.errors import DecodeError
from driftwire.schemas.records import alert_from_record, alert_to_record
from driftwire.schemas.serde import FORMATS, Codec, load_schema
from hypothesis import given, settings
from hypothesis import strategies as st

FULL_ALERT = Alert(
    alert_id="9c1d",
    model_id="fraud-scorer",
    kind=AlertKind.CONCEPT_DRIFT,
    detector="adwin",
    status=Status.RESOLVED,
    severity=Severity.INFO,
    statistic="error_rate",
    value=0.12,
    threshold=0.1,
    window_start=1_764_768_000_000,
    window_end=1_764_768_060_000,
    window_count=0,
    reference_id="ref-3",
    feature=None,
    segment="country=FR",
    p_value=None,
    model_version="v7",
    provisional=True,
    partitions_reported=6,
    evidence=Evidence(reference={"error": 0.05}, current={"error": 0.12}, notes={"labels": "84%"}),
)


def codec(fmt: str) -> Codec:
    schema = load_schema("DriftAlert")
    return Codec(schema, fmt, registry={3: schema.text}, schema_id=3)


def test_drift_alert_schema_mirrors_alert_field_for_field() -> None:
    schema_fields = [f["name"] for f in load_schema("DriftAlert").parsed["fields"]]
    assert schema_fields == [f.name for f in fields(Alert)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_alert_round_trips_in_every_format(fmt: str) -> None:
    c = codec(fmt)
    assert alert_from_record(c.decode(c.encode(alert_to_record(FULL_ALERT)))) == FULL_ALERT


def test_record_carries_plain_strings_for_enums() -> None:
    record = alert_to_record(FULL_ALERT)
    assert (record["kind"], record["status"], record["severity"]) == (
        "concept_drift",
        "resolved",
        "info",
    )
    assert type(record["kind"]) is str


TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8)
MAYBE = st.none() | TEXT


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(AlertKind),
    status=st.sampled_from(Status),
    severity=st.sampled_from(Severity),
    value=st.floats(allow_nan=False),
    threshold=st.floats(allow_nan=False, allow_infinity=False),
    p_value=st.none() | st.floats(0, 1),
    start=st.integers(0, 2**42),
    feature=MAYBE,
    segment=MAYBE,
    version=MAYBE,
    evidence=st.dictionaries(TEXT, st.floats(allow_nan=False), max_size=3),
    fmt=st.sampled_from(FORMATS),
)
def test_random_alerts_round_trip(
    kind: AlertKind,
    status: Status,
    severity: Severity,
    value: float,
    threshold: float,
    p_value: float | None,
    start: int,
    feature: str | None,
    segment: str | None,
    version: str | None,
    evidence: dict[str, float],
    fmt: str,
) -> None:
    alert = Alert(
        alert_id="a",
        model_id="m",
        kind=kind,
        detector="d",
        status=status,
        severity=severity,
        statistic="s",
        value=value,
        threshold=threshold,
        window_start=start,
        window_end=start + 60_000,
        window_count=10,
        reference_id="r",
        feature=feature,
        segment=segment,
        p_value=p_value,
        model_version=version,
        evidence=Evidence(reference=evidence, current=evidence),
    )
    c = codec(fmt)
    assert alert_from_record(c.decode(c.encode(alert_to_record(alert)))) == alert


def test_alerts_from_the_lifecycle_encode() -> None:
    life = AlertLifecycle(AlertPolicy(fire_after=1, resolve_after=1), "fraud", "ref-1")
    verdict = Verdict(
        kind=AlertKind.DATA_DRIFT,
        detector="psi",
        statistic="psi",
        value=0.4,
        threshold=0.2,
        breached=True,
        window_start=0,
        window_end=60_000,
        window_count=500,
        feature="amount",
    )
    (alert,) = life.observe(verdict)
    c = codec("avro")
    assert alert_from_record(c.decode(c.encode(alert_to_record(alert)))) == alert


def test_unknown_kind_from_a_newer_producer_is_a_decode_error() -> None:
    record = {**alert_to_record(FULL_ALERT), "kind": "feature_importance_drift"}
    decoded = codec("avro").decode(codec("avro").encode(record))  # the wire contract accepts it
    with pytest.raises(DecodeError, match="unknown alert kind 'feature_importance_drift'"):
        alert_from_record(decoded)


def test_fields_a_newer_schema_adds_are_ignored() -> None:
    record = {**alert_to_record(FULL_ALERT), "runbook_url": "https://example.invalid/rb"}
    assert alert_from_record(record) == FULL_ALERT


def test_schemas_package_does_not_import_the_engine_or_kafka() -> None:
    code = (
        "import sys, driftwire.schemas, driftwire.schemas.records, driftwire.schemas.mapping; "
        "bad = [m for m in sys.modules if m.startswith(('driftwire.detectors', 'confluent_kafka',"
        " 'faust', 'aiokafka'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docstring_example_runs() -> None:
    result = doctest.testmod(records_module)
    assert result.attempted > 0 and result.failed == 0
