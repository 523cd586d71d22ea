"""The serde: round trips of every shipped .avsc in every format, bad inputs, evolution, mapping."""

from __future__ import annotations

import doctest
import io
import json
import math
import struct
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from driftwire.schemas import errors as errors_module
from driftwire.schemas import mapping as mapping_module
from driftwire.schemas import serde as serde_module
from driftwire.schemas.errors import DecodeError, EncodeError
from driftwire.schemas.mapping import FieldMapping
from driftwire.schemas.serde import FORMATS, Codec, load_schema, schema_names
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SCHEMA_NAMES = schema_names()
LONG = (-(2**63), 2**63 - 1)
INT = (-(2**31), 2**31 - 1)


def codec_for(name: str, fmt: str) -> Codec:
    schema = load_schema(name)
    if fmt == "confluent":
        return Codec(schema, fmt, registry={7: schema.text}, schema_id=7)
    return Codec(schema, fmt)


def same(a: Any, b: Any) -> bool:
    """Exact equality: same types, NaN equals NaN, -0.0 differs from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# -- a hypothesis strategy for any Avro schema, honouring driftwire's contract attributes --------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


def avro_values(node: Any, named: dict[str, Any], attrs: dict[str, Any]) -> st.SearchStrategy:
    if isinstance(node, list):
        return st.one_of([avro_values(branch, named, attrs) for branch in node])
    if isinstance(node, str):
        return named[node] if node in named else primitive(node, None, attrs)
    kind = node["type"]
    if kind == "record":
        fields = {}
        named[node["name"]] = st.deferred(lambda: st.fixed_dictionaries(fields))
        for f in node["fields"]:
            fields[f["name"]] = avro_values(f["type"], named, f)
        return named[node["name"]]
    if kind == "enum":
        named[node["name"]] = st.sampled_from(node["symbols"])
        return named[node["name"]]
    if kind == "fixed":
        named[node["name"]] = st.binary(min_size=node["size"], max_size=node["size"])
        return named[node["name"]]
    if kind == "array":
        return st.lists(avro_values(node["items"], named, attrs), max_size=4)
    if kind == "map":
        return st.dictionaries(TEXT, avro_values(node["values"], named, attrs), max_size=4)
    return primitive(kind, node.get("logicalType"), attrs)


def primitive(kind: str, logical: str | None, attrs: dict[str, Any]) -> st.SearchStrategy:
    finite = bool(attrs.get("driftwire.finite"))
    if kind in ("int", "long"):
        low, high = INT if kind == "int" else LONG
        if logical and logical.startswith("timestamp"):
            low, high = 0, 253402300799999
        low = max(low, attrs.get("driftwire.minimum", low))
        high = min(high, attrs.get("driftwire.maximum", high))
        return st.integers(low, high)
    strategies = {
        "null": st.none(),
        "boolean": st.booleans(),
        "float": st.floats(width=32, allow_nan=not finite, allow_infinity=not finite),
        "double": st.floats(allow_nan=not finite, allow_infinity=not finite),
        "bytes": st.binary(max_size=12),
        "string": TEXT.filter(bool) if attrs.get("driftwire.nonEmpty") else TEXT,
    }
    return strategies[kind]


def records_of(name: str) -> st.SearchStrategy:
    return avro_values(json.loads(load_schema(name).text), {}, {})


# -- round trips --------------------------------------------------------------------------------

FEATURE_EVENT = {
    "model_id": "fraud-scorer",
    "model_version": "2026.11.3",
    "prediction_id": "req-81237",
    "event_time": 1_764_768_000_123,
    "numeric": {"amount": 129.5, "age_days": None, "ratio": float("nan"), "peak": float("inf")},
    "categorical": {"country": "FR", "device": None},
    "prediction": {"score": 0.93, "label": "fraud"},
    "segments": {"country": "FR"},
    "latency_ms": 41.5,
}
OUTCOME_EVENT = {
    "model_id": "fraud-scorer",
    "prediction_id": "req-81237",
    "event_time": 1_764_768_900_000,
    "value": 1.0,
    "label": "fraud",
}
DRIFT_ALERT = {
    "alert_id": "3f2a",
    "model_id": "fraud-scorer",
    "kind": "data_drift",
    "detector": "psi",
    "status": "firing",
    "severity": "critical",
    "statistic": "psi",
    "value": float("inf"),
    "threshold": 0.2,
    "window_start": 1_764_768_000_000,
    "window_end": 1_764_768_060_000,
    "window_count": 1204,
    "reference_id": "ref-7",
    "feature": "amount",
    "segment": None,
    "p_value": 0.0004,
    "model_version": None,
    "provisional": False,
    "partitions_reported": 12,
    "evidence": {"reference": {"mean": 80.1}, "current": {"mean": 131.0}, "notes": {"n": "x"}},
}
EXAMPLES = {"FeatureEvent": FEATURE_EVENT, "OutcomeEvent": OUTCOME_EVENT, "DriftAlert": DRIFT_ALERT}


def test_driftwire_contracts_are_shipped() -> None:
    assert {"FeatureEvent", "OutcomeEvent", "DriftAlert"} <= set(SCHEMA_NAMES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_field_is_documented(name: str) -> None:
    def undocumented(node: Any, path: str) -> list[str]:
        if isinstance(node, list):
            return [m for branch in node for m in undocumented(branch, path)]
        if not isinstance(node, dict):
            return []
        missing = []
        for f in node.get("fields", ()):
            if not f.get("doc"):
                missing.append(f"{path}.{f['name']}")
            missing += undocumented(f["type"], f"{path}.{f['name']}")
        for key in ("items", "values"):
            missing += undocumented(node.get(key), path)
        return missing

    assert undocumented(json.loads(load_schema(name).text), name) == []


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_round_trips_exactly(name: str, fmt: str) -> None:
    codec = codec_for(name, fmt)
    assert same(codec.decode(codec.encode(EXAMPLES[name])), EXAMPLES[name])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_valid_records_round_trip_exactly(name: str, fmt: str, data: st.DataObject) -> None:
    record = data.draw(records_of(name))
    codec = codec_for(name, fmt)
    assert same(codec.decode(codec.encode(record)), record)


def test_defaults_fill_missing_optional_fields() -> None:
    minimal = {"model_id": "m", "prediction_id": "p", "event_time": 5}
    for fmt in FORMATS:
        codec = codec_for("FeatureEvent", fmt)
        decoded = codec.decode(codec.encode(minimal))
        assert decoded["model_version"] == ""
        assert decoded["numeric"] == {} and decoded["segments"] == {}
        assert decoded["prediction"] == {"score": None, "label": None}


def test_timestamps_decode_as_int_millis_and_datetimes_encode() -> None:
    when = datetime(2026, 12, 3, 13, 0, 0, 250_000, tzinfo=UTC)
    codec = Codec("OutcomeEvent", "avro")
    decoded = codec.decode(
        codec.encode({"model_id": "m", "prediction_id": "p", "event_time": when})
    )
    assert decoded["event_time"] == int(when.timestamp() * 1000)
    assert type(decoded["event_time"]) is int


def test_json_numbers_become_doubles_and_nan_tokens_are_read() -> None:
    raw = (
        b'{"model_id":"m","prediction_id":"p","event_time":1,'
        b'"numeric":{"a":3,"b":NaN,"c":-Infinity}}'
    )
    numeric = Codec("FeatureEvent", "json").decode(raw)["numeric"]
    assert same(numeric, {"a": 3.0, "b": float("nan"), "c": float("-inf")})


# -- bad input ----------------------------------------------------------------------------------


def raw_avro(name: str, record: dict) -> bytes:
    """Encode with fastavro directly, bypassing driftwire's contract checks."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(name).parsed, record)
    return buf.getvalue()


def framed(schema_id: int, body: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


GOOD_FEATURE = raw_avro("FeatureEvent", FEATURE_EVENT)
OLD_SCHEMA = {  # a writer schema lacking prediction_id, which the reader requires
    "type": "record",
    "name": "FeatureEvent",
    "namespace": "io.driftwire",
    "fields": [
        {"name": "model_id", "type": "string"},
        {"name": "event_time", "type": "long"},
    ],
}
REGISTRY = {1: load_schema("FeatureEvent").text, 2: json.dumps(OLD_SCHEMA)}

BAD_INPUTS = [
    # (id, schema, format, bytes, words the reason must contain)
    ("truncated", "FeatureEvent", "avro", GOOD_FEATURE[:20], "malformed Avro"),
    ("trailing", "FeatureEvent", "avro", GOOD_FEATURE + b"\x00\x01", "2 bytes left"),
    ("bad-utf8", "OutcomeEvent", "avro", b"\x02\xff" + b"\x02p\x02\x00\x00", "malformed Avro"),
    ("bad-union", "OutcomeEvent", "avro", b"\x02m\x02p\x02\x08", "malformed Avro"),
    ("json-on-avro", "FeatureEvent", "confluent", b'{"model_id": "m"}', "magic byte 0x7b"),
    ("no-frame", "FeatureEvent", "confluent", GOOD_FEATURE, "wrong magic byte"),
    ("short", "FeatureEvent", "confluent", b"\x00\x00\x01", "shorter than the 5-byte header"),
    ("unknown-id", "FeatureEvent", "confluent", framed(99, GOOD_FEATURE), "unknown schema id 99"),
    ("unresolvable", "FeatureEvent", "confluent", framed(2, b"\x02m\x02"), "cannot be read as"),
    ("empty", "FeatureEvent", "avro", b"", "empty message"),
    ("not-json", "FeatureEvent", "json", b"\x00\x01garbage", "not valid UTF-8 JSON"),
    ("json-list", "FeatureEvent", "json", b"[1, 2]", "expected a JSON object, got list"),
    (
        "json-missing",
        "FeatureEvent",
        "json",
        b'{"model_id": "m", "event_time": 1}',
        "missing required field 'prediction_id'",
    ),
    (
        "json-wrong-type",
        "FeatureEvent",
        "json",
        b'{"model_id": "m", "prediction_id": "p", "event_time": "yesterday"}',
        "wrong type: FeatureEvent.event_time",
    ),
    (
        "json-float-time",
        "OutcomeEvent",
        "json",
        b'{"model_id": "m", "prediction_id": "p", "event_time": Infinity}',
        "wrong type: OutcomeEvent.event_time",
    ),
    (
        "json-fraction-time",
        "OutcomeEvent",
        "json",
        b'{"model_id": "m", "prediction_id": "p", "event_time": 1.5}',
        "OutcomeEvent.event_time is 1.5 (float), expected an integer",
    ),
    (
        "json-bool-count",
        "DriftAlert",
        "json",
        Codec("DriftAlert", "json")
        .encode(DRIFT_ALERT)
        .replace(b'"window_count":1204', b'"window_count":true'),
        "DriftAlert.window_count is True (bool), expected long",
    ),
    (
        "json-feature-str",
        "FeatureEvent",
        "json",
        b'{"model_id": "m", "prediction_id": "p", "event_time": 1, "numeric": {"a": "1.5"}}',
        "wrong type: FeatureEvent.numeric",
    ),
    (
        "json-nan-label",
        "OutcomeEvent",
        "json",
        b'{"model_id": "m", "prediction_id": "p", "event_time": 1, "value": NaN}',
        "value must be finite, got nan",
    ),
    (
        "avro-inf-label",
        "OutcomeEvent",
        "avro",
        raw_avro("OutcomeEvent", {**OUTCOME_EVENT, "value": float("-inf")}),
        "value must be finite, got -inf",
    ),
    (
        "empty-model",
        "FeatureEvent",
        "avro",
        raw_avro("FeatureEvent", {**FEATURE_EVENT, "model_id": ""}),
        "model_id must not be empty",
    ),
    (
        "negative-time",
        "FeatureEvent",
        "avro",
        raw_avro("FeatureEvent", {**FEATURE_EVENT, "event_time": -5}),
        "event_time is below 0",
    ),
    (
        "micros-as-millis",
        "FeatureEvent",
        "avro",
        raw_avro("FeatureEvent", {**FEATURE_EVENT, "event_time": 1_764_768_000_123_000}),
        "event_time is above",
    ),
    (
        "nan-threshold",
        "DriftAlert",
        "json",
        Codec("DriftAlert", "json")
        .encode(DRIFT_ALERT)
        .replace(b'"threshold":0.2', b'"threshold":NaN'),
        "threshold must be finite",
    ),
]


@pytest.mark.parametrize(
    ("schema", "fmt", "data", "expected"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_raises_one_typed_error(
    schema: str, fmt: str, data: bytes, expected: str
) -> None:
    codec = Codec(schema, fmt, registry=REGISTRY) if fmt == "confluent" else Codec(schema, fmt)
    with pytest.raises(DecodeError) as caught:
        codec.decode(data, topic="features", partition=3, offset=1042)
    err = caught.value
    assert type(err) is DecodeError and isinstance(err, ValueError)
    assert str(err).startswith("features[3]@1042: ")
    assert expected in err.reason
    assert err.raw == data and err.schema == load_schema(schema).name


def test_wrong_magic_byte_message_reads_well() -> None:
    codec = Codec("FeatureEvent", "confluent", registry=REGISTRY)
    with pytest.raises(DecodeError) as caught:
        codec.decode(b'{"a": 1}', topic="features", partition=3, offset=1042)
    assert str(caught.value) == (
        "features[3]@1042: wrong magic byte 0x7b (expected 0x00: is this JSON on an Avro topic?)"
    )


def test_decode_error_without_location_names_the_schema() -> None:
    with pytest.raises(DecodeError, match=r"^io\.driftwire\.FeatureEvent: empty message"):
        Codec("FeatureEvent", "avro").decode(None)


def test_decode_many_collects_errors_without_raising() -> None:
    codec = codec_for("FeatureEvent", "avro")
    good = codec.encode(FEATURE_EVENT)
    batch = [good, b"\x00\x01", good, b"", good]
    records, errors = codec.decode_many(batch, topic="features", partition=0, offsets=range(10, 15))
    assert len(records) == 3 and all(same(r, FEATURE_EVENT) for r in records)
    assert [(e.index, e.offset, e.raw) for e in errors] == [(1, 11, b"\x00\x01"), (3, 13, b"")]
    assert all(str(e).startswith(f"features[0]@{e.offset}: ") for e in errors)


def test_registry_outage_is_not_a_data_error() -> None:
    class DownRegistry:
        def get_schema(self, schema_id: int) -> Any:
            raise ConnectionError("registry unreachable")

        def register_schema(self, subject_name: str, schema: Any) -> int:
            raise ConnectionError("registry unreachable")

    codec = Codec("FeatureEvent", "confluent", registry=DownRegistry())
    with pytest.raises(ConnectionError):
        codec.decode_many([framed(1, GOOD_FEATURE)])


ENCODE_ERRORS = [
    ("missing", {"model_id": "m", "event_time": 1}, "prediction_id"),
    ("wrong-type", {**OUTCOME_EVENT, "event_time": "now"}, "event_time"),
    ("fraction", {**OUTCOME_EVENT, "event_time": 2.5}, "event_time is 2.5"),
    ("bool-label", {**OUTCOME_EVENT, "value": True}, "value"),
    ("nan-label", {**OUTCOME_EVENT, "value": float("nan")}, "value must be finite"),
    ("empty-id", {**OUTCOME_EVENT, "prediction_id": ""}, "prediction_id must not be empty"),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("record", "expected"), [c[1:] for c in ENCODE_ERRORS], ids=[c[0] for c in ENCODE_ERRORS]
)
def test_bad_records_raise_encode_error(fmt: str, record: dict, expected: str) -> None:
    with pytest.raises(EncodeError, match=expected):
        codec_for("OutcomeEvent", fmt).encode(record)


def test_confluent_encode_without_schema_id_fails_clearly() -> None:
    with pytest.raises(EncodeError, match="schema_id"):
        Codec("OutcomeEvent", "confluent", registry={}).encode(OUTCOME_EVENT)


# -- evolution ----------------------------------------------------------------------------------


def evolved_feature_schema() -> dict:
    schema = json.loads(load_schema("FeatureEvent").text)
    schema["fields"].append(
        {"name": "tenant", "type": "string", "default": "", "doc": "added in a later version"}
    )
    return schema


def test_older_writer_decodes_with_defaults_for_new_fields() -> None:
    old = json.loads(load_schema("FeatureEvent").text)
    old["fields"] = [f for f in old["fields"] if f["name"] not in ("segments", "model_version")]
    record = {k: v for k, v in FEATURE_EVENT.items() if k not in ("segments", "model_version")}
    writer = Codec(old, "avro")
    for codec in (
        Codec("FeatureEvent", "avro", writer_schema=old),
        Codec("FeatureEvent", "confluent", registry={5: old}),
    ):
        data = writer.encode(record)
        data = framed(5, data) if codec.fmt == "confluent" else data
        decoded = codec.decode(data)
        assert decoded["segments"] == {} and decoded["model_version"] == ""
        assert same(decoded["numeric"], FEATURE_EVENT["numeric"])


def test_newer_writer_fields_are_ignored_by_this_reader() -> None:
    newer = evolved_feature_schema()
    data = Codec(newer, "avro").encode({**FEATURE_EVENT, "tenant": "acme"})
    decoded = Codec("FeatureEvent", "confluent", registry={9: newer}).decode(framed(9, data))
    assert same(decoded, FEATURE_EVENT)


# -- field mapping ------------------------------------------------------------------------------

USER_RECORD = {
    "request": {"id": "r-9", "model": {"name": "churn", "v": 3}},
    "ts": "2026-12-03T13:00:00.250Z",
    "features": {"tenure": 14, "spend": 80.5, "plan": "pro"},
    "country": "DE",
    "is_mobile": True,
    "out": {"p": 0.2},
}


def test_mapping_builds_a_valid_feature_event() -> None:
    mapping = FieldMapping.from_config(
        {
            "model_id": "request.model.name",
            "model_version": "request.model.v",
            "prediction_id": "request.id",
            "event_time": "ts",
            "time_unit": "iso",
            "numeric": ["features.tenure", "features.spend", "features.absent"],
            "categorical": ["features.plan", "is_mobile"],
            "score": "out.p",
            "segments": {"country": "country"},
        }
    )
    event = mapping.apply(USER_RECORD)
    expected_ms = int(datetime(2026, 12, 3, 13, 0, 0, 250_000, tzinfo=UTC).timestamp() * 1000)
    assert event["model_id"] == "churn" and event["model_version"] == "3"
    assert event["event_time"] == expected_ms
    assert event["numeric"] == {
        "features.tenure": 14.0,
        "features.spend": 80.5,
        "features.absent": None,
    }
    assert event["categorical"] == {"features.plan": "pro", "is_mobile": "true"}
    assert event["prediction"] == {"score": 0.2, "label": None}
    assert event["segments"] == {"country": "DE"}
    codec = Codec("FeatureEvent", "avro")
    assert same(codec.decode(codec.encode(event)), event)


@pytest.mark.parametrize(
    ("unit", "value", "expected"),
    [
        ("ms", 1_700_000_000_123, 1_700_000_000_123),
        ("s", 1_700_000_000.123, 1_700_000_000_123),
        ("s", 1_700_000_000, 1_700_000_000_000),
        ("us", 1_700_000_000_123_999, 1_700_000_000_123),
        ("ns", 1_700_000_000_123_456_789, 1_700_000_000_123),
    ],
)
def test_mapping_time_units(unit: str, value: float, expected: int) -> None:
    mapping = FieldMapping(fixed_model_id="m", prediction_id="id", event_time="t", time_unit=unit)
    assert mapping.apply({"id": "x", "t": value})["event_time"] == expected


def test_mapping_takes_every_key_of_a_feature_object() -> None:
    mapping = FieldMapping(
        fixed_model_id="m", prediction_id="id", event_time="t", numeric="num", categorical="cat"
    )
    event = mapping.apply({"id": "x", "t": 1, "num": {"a": 1, "b": None}, "cat": {"c": 7}})
    assert event["numeric"] == {"a": 1.0, "b": None} and event["categorical"] == {"c": "7"}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"t": 1}, "missing field 'request.id'"),
        ({"request": {"id": "x"}}, "missing field 't'"),
        ({"request": {"id": "x"}, "t": "soon"}, "'t' is 'soon', expected a number"),
        (
            {"request": {"id": "x"}, "t": 1, "num": {"a": "n/a"}},
            "'num.a' is 'n/a', expected a number",
        ),
        ({"request": {"id": "x"}, "t": 1, "num": [1, 2]}, "'num' is list, expected an object"),
        ({"request": {"id": ""}, "t": 1}, "prediction_id must not be empty"),
        ({"request": {"id": "x"}, "t": -1}, "event_time is below 0 (-1)"),
    ],
)
def test_mapping_errors_name_the_path(record: dict, expected: str) -> None:
    mapping = FieldMapping(
        fixed_model_id="m",
        prediction_id="request.id",
        event_time="t",
        numeric="num",
        categorical=None,
    )
    with pytest.raises(DecodeError) as caught:
        mapping.apply(record, topic="clicks", partition=1, offset=5)
    assert str(caught.value) == f"clicks[1]@5: {expected}"


def test_mapping_rejects_unknown_config_keys() -> None:
    with pytest.raises(ValueError, match="unknown field mapping keys: colour"):
        FieldMapping.from_config({"colour": "red"})


@pytest.mark.parametrize("module", [serde_module, errors_module, mapping_module])
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
