"""FeatureEvent gained an optional `latency_ms`: old and new events must both still decode."""

from __future__ import annotations

import copy
import io
import json

import fastavro
import numpy as np
from driftwire.detectors.batch import FeatureBatch
from driftwire.schemas.serde import load_schema

NEW = json.loads(load_schema("FeatureEvent").text)
# driftwire reads event_time as an int of ms, not a datetime (as the shipped reader does)
next(f for f in NEW["fields"] if f["name"] == "event_time")["type"] = "long"
OLD = copy.deepcopy(NEW)
OLD["fields"] = [f for f in OLD["fields"] if f["name"] != "latency_ms"]

EVENT = {
    "model_id": "fraud",
    "model_version": "v7",
    "prediction_id": "p-1",
    "event_time": 1_700_000_000_000,
    "numeric": {"amount": 12.5},
    "categorical": {"country": "FR"},
    "prediction": {"score": 0.25, "label": None},
    "segments": {},
}


def _write(schema: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(copy.deepcopy(schema)), record)
    return buf.getvalue()


def _read(data: bytes, writer: dict, reader: dict) -> dict:
    return fastavro.schemaless_reader(
        io.BytesIO(data),
        fastavro.parse_schema(copy.deepcopy(writer)),
        fastavro.parse_schema(copy.deepcopy(reader)),
    )


def test_latency_field_is_optional_with_null_default():
    field = next(f for f in NEW["fields"] if f["name"] == "latency_ms")
    assert field["type"] == ["null", "double"] and field["default"] is None
    assert field["doc"]


def test_old_event_decodes_with_new_reader_as_null_latency():
    data = _write(OLD, EVENT)
    record = _read(data, OLD, NEW)
    assert record["latency_ms"] is None
    assert record["numeric"] == {"amount": 12.5} and record["model_version"] == "v7"


def test_new_event_round_trips_and_old_reader_skips_latency():
    data = _write(NEW, EVENT | {"latency_ms": 41.5})
    assert _read(data, NEW, NEW)["latency_ms"] == 41.5
    old_view = _read(data, NEW, OLD)
    assert "latency_ms" not in old_view and old_view["prediction"]["score"] == 0.25


def test_schemas_are_mutually_compatible_both_ways():
    # fastavro raises SchemaResolutionError when a reader cannot resolve a writer
    for writer, reader in ((OLD, NEW), (NEW, OLD)):
        _read(_write(writer, EVENT), writer, reader)


def test_batch_from_records_reads_latency_and_missing_as_nan():
    old = _read(_write(OLD, EVENT), OLD, NEW)
    new = _read(_write(NEW, EVENT | {"latency_ms": 80.0}), NEW, NEW)
    batch = FeatureBatch.from_records([old, new])
    assert np.isnan(batch.latency_ms[0]) and batch.latency_ms[1] == 80.0
