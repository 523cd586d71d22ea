"""Confluent framing interop: bytes from confluent-kafka's AvroSerializer decode with driftwire's
serde and driftwire's bytes decode with confluent-kafka's AvroDeserializer (in-process mock
Schema Registry, confluent-kafka 2.x)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from driftwire.schemas.errors import DecodeError
from driftwire.schemas.serde import Codec, load_schema, schema_names
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serde import EXAMPLES, FEATURE_EVENT, records_of, same

TOPIC = "features"
CTX = SerializationContext(TOPIC, MessageField.VALUE)


def as_millis(value: Any) -> Any:
    """confluent's deserializer turns timestamp-millis into datetimes; driftwire keeps int ms."""
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {k: as_millis(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_millis(v) for v in value]
    return value


def mock_registry() -> SchemaRegistryClient:
    return SchemaRegistryClient.new_client({"url": "mock://driftwire-tests"})


def confluent_to_driftwire(name: str, record: dict) -> dict:
    registry = mock_registry()
    data = AvroSerializer(registry, load_schema(name).text)(record, CTX)
    return Codec(name, "confluent", registry=registry).decode(data, topic=TOPIC)


def driftwire_to_confluent(name: str, record: dict) -> tuple[bytes, dict]:
    registry = mock_registry()
    data = Codec(name, "confluent", registry=registry, subject=f"{TOPIC}-value").encode(record)
    return data, AvroDeserializer(registry)(data, CTX)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_confluent_serializer_bytes_decode_with_driftwire(name: str) -> None:
    assert same(confluent_to_driftwire(name, EXAMPLES[name]), EXAMPLES[name])


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_driftwire_bytes_decode_with_confluent_deserializer(name: str) -> None:
    _, decoded = driftwire_to_confluent(name, EXAMPLES[name])
    assert same(as_millis(decoded), EXAMPLES[name])


@pytest.mark.parametrize("name", schema_names())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_records_cross_both_ways(name: str, data: st.DataObject) -> None:
    record = data.draw(records_of(name))
    assert same(confluent_to_driftwire(name, record), record)
    _, decoded = driftwire_to_confluent(name, record)
    assert same(as_millis(decoded), record)


def test_both_sides_agree_on_the_frame_and_schema_id() -> None:
    registry = mock_registry()
    theirs = AvroSerializer(registry, load_schema("FeatureEvent").text)(FEATURE_EVENT, CTX)
    ours = Codec("FeatureEvent", "confluent", registry=registry, subject=f"{TOPIC}-value")
    assert ours.encode(FEATURE_EVENT) == theirs


def test_evolved_writer_registered_by_confluent_decodes_with_shipped_reader() -> None:
    newer = json.loads(load_schema("FeatureEvent").text)
    newer["fields"].append({"name": "tenant", "type": "string", "default": "", "doc": "new"})
    registry = mock_registry()
    data = AvroSerializer(registry, json.dumps(newer))({**FEATURE_EVENT, "tenant": "acme"}, CTX)
    assert same(Codec("FeatureEvent", "confluent", registry=registry).decode(data), FEATURE_EVENT)


def test_unknown_schema_id_in_mock_registry_is_a_decode_error() -> None:
    registry = mock_registry()
    data = AvroSerializer(registry, load_schema("FeatureEvent").text)(FEATURE_EVENT, CTX)
    forged = data[:1] + (999).to_bytes(4, "big") + data[5:]
    with pytest.raises(DecodeError, match=r"^features\[2\]@7: unknown schema id 999"):
        Codec("FeatureEvent", "confluent", registry=registry).decode(
            forged, topic=TOPIC, partition=2, offset=7
        )
