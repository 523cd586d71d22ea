"""Bad input, fuzzed: the decoders and the worker's stage-1 entry point never crash.

Property-based (hypothesis) over every input decoder (FeatureEvent and OutcomeEvent in
the avro, confluent and json formats) and over `PartitionProfiler.observe`, the batch
entry point of the engine in the worker: random bytes, truncated Avro, wrong schema
ids, huge strings, NaN/inf, negative and far-future timestamps, a million distinct
categories, unknown models. A rejected message always comes back as a DecodeError
carrying its index, a reason and the original bytes -- what the worker forwards to the
dead-letter topic (the one broker test at the end checks that it really does).
"""

from __future__ import annotations

import io
import math
import threading
import tracemalloc
import uuid

import fastavro
import numpy as np
import pytest
from confluent_kafka import Producer
from driftwire.detectors.config import parse_config
from driftwire.detectors.generators import StreamSpec, take_events
from driftwire.detectors.monitor import Monitor
from driftwire.detectors.reference import ReferenceProfile
from driftwire.schemas.serde import Codec, load_schema
from driftwire.streams import dlq
from driftwire.streams.app import ModelEngine, Worker
from driftwire.streams.config import StreamsConfig
from driftwire.streams.worker import (
    PartitionProfiler,
    Timing,
    encode_checkpoint,
    feature_batch,
    split_future,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.faults  # bad input is one of the faults `pytest -m faults` covers

SCHEMA_ID = 7
SCHEMAS = ("FeatureEvent", "OutcomeEvent")
FORMATS = ("avro", "confluent", "json")
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MODEL = "m"
CONFIG = parse_config({"models": [{"id": MODEL, "window": {"size": "10s", "min_count": 50}}]})


def _codec(schema: str, fmt: str) -> Codec:
    if fmt == "confluent":
        return Codec(schema, fmt, registry={SCHEMA_ID: load_schema(schema).text})
    return Codec(schema, fmt)


def _frame(fmt: str, body: bytes, schema_id: int = SCHEMA_ID) -> bytes:
    return (b"\x00" + schema_id.to_bytes(4, "big") + body) if fmt == "confluent" else body


def _raw_avro(schema: str, record: dict) -> bytes:
    """Avro bytes written without the codec's contract checks (a careless producer)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(schema).parsed, record)
    return buf.getvalue()


def _check_batch(codec: Codec, messages: list[bytes]) -> list[dict]:
    """decode_many's contract on any input: every message either decoded or explained."""
    records, errors = codec.decode_many(
        messages, topic="t", partition=0, offsets=range(len(messages))
    )
    assert len(records) + len(errors) == len(messages)
    assert len({e.index for e in errors}) == len(errors)
    for err in errors:
        assert err.reason and isinstance(err.reason, str)
        assert err.raw == messages[err.index]
        assert err.offset == err.index
    return records


# -- random and damaged bytes -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("schema", SCHEMAS)
@FUZZ
@given(blobs=st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_random_bytes_never_crash_a_decoder(schema: str, fmt: str, blobs: list[bytes]) -> None:
    _check_batch(_codec(schema, fmt), blobs)


feature_records = st.fixed_dictionaries(
    {
        "model_id": st.text(min_size=1, max_size=20),
        "prediction_id": st.text(min_size=1, max_size=20),
        "event_time": st.integers(0, 253402300799999),
        "numeric": st.dictionaries(
            st.text(max_size=5), st.none() | st.floats(allow_nan=False), max_size=4
        ),
        "categorical": st.dictionaries(st.text(max_size=5), st.none() | st.text(), max_size=4),
    }
)


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(record=feature_records, data=st.data())
def test_a_truncated_message_is_rejected_with_a_reason(fmt: str, record: dict, data) -> None:
    codec = _codec("FeatureEvent", fmt)
    whole = (
        codec.encode(record)
        if fmt != "confluent"
        else _frame(fmt, _raw_avro("FeatureEvent", record))
    )
    cut = data.draw(st.integers(0, len(whole) - 1))
    assert _check_batch(codec, [whole]) and not _check_batch(codec, [whole[:cut]])


@FUZZ
@given(record=feature_records, schema_id=st.integers(0, 2**32 - 1).filter(lambda i: i != SCHEMA_ID))
def test_an_unknown_schema_id_is_rejected(record: dict, schema_id: int) -> None:
    codec = _codec("FeatureEvent", "confluent")
    message = _frame("confluent", _raw_avro("FeatureEvent", record), schema_id)
    _, errors = codec.decode_many([message])
    assert [f"unknown schema id {schema_id}" in e.reason for e in errors] == [True]


# -- values out of contract -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["avro", "confluent"])
@FUZZ
@given(
    event_time=st.integers(-(2**63), 2**63 - 1),
    value=st.floats(allow_nan=True, allow_infinity=True),
    score=st.none() | st.floats(allow_nan=True, allow_infinity=True),
)
def test_out_of_contract_values_are_rejected_or_passed_on_as_documented(
    fmt: str, event_time: int, value: float, score: float | None
) -> None:
    record = {
        "model_id": MODEL,
        "prediction_id": "p",
        "event_time": event_time,
        "numeric": {"x0": value},
        "prediction": {"score": score, "label": None},
    }
    codec = _codec("FeatureEvent", fmt)
    records = _check_batch(codec, [_frame(fmt, _raw_avro("FeatureEvent", record))])
    in_range = 0 <= event_time <= 253402300799999
    assert bool(records) == in_range  # the contract bounds event_time
    if records:  # NaN/inf features and scores are passed on for the engine to count
        got = records[0]["numeric"]["x0"]
        assert got == value or (math.isnan(got) and math.isnan(value))


def test_huge_strings_decode_within_bounded_memory() -> None:
    """A 4 MB model id is a valid event (of an unknown model); decoding copies it ~once."""
    huge = "x" * 4_000_000
    record = {"model_id": huge, "prediction_id": huge, "event_time": 1}
    for fmt in FORMATS:
        codec = _codec("FeatureEvent", fmt)
        message = (
            _frame(fmt, _raw_avro("FeatureEvent", record))
            if fmt != "json"
            else codec.encode(record)
        )
        tracemalloc.start()
        records = _check_batch(codec, [message])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert records[0]["model_id"] == huge
        assert peak < 8 * len(message), f"{fmt}: peak {peak} for a {len(message)}-byte message"


def test_a_length_prefix_claiming_gigabytes_is_rejected_without_allocating_them() -> None:
    # model_id length varint = 2**40: a reader that trusted it would try to allocate 1 TB
    body = b"\x80\x80\x80\x80\x80\x40" + b"abc"
    for fmt in ("avro", "confluent"):
        tracemalloc.start()
        records = _check_batch(_codec("FeatureEvent", fmt), [_frame(fmt, body)])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert not records and peak < 10_000_000


# -- the engine's batch entry point (stage 1) ---------------------------------------------------


def _profiler() -> PartitionProfiler:
    spec = StreamSpec(n_numeric=3, n_categorical=1, seed=1, model_id=MODEL)
    ref = ReferenceProfile.from_batch(take_events(spec, 2_000), CONFIG.model(MODEL))
    numeric, categorical = tuple(ref.numeric), tuple(ref.categorical)
    return PartitionProfiler(
        0,
        {MODEL: Monitor(CONFIG.model(MODEL), ref)},
        {MODEL: Timing(10_000, 0)},
        lambda m, recs: feature_batch(recs, numeric, categorical),
    )


event_records = st.fixed_dictionaries(
    {
        "model_id": st.sampled_from([MODEL, MODEL, MODEL, "ghost"]),
        "prediction_id": st.text(min_size=1, max_size=8),
        "event_time": st.integers(0, 253402300799999),
        "numeric": st.fixed_dictionaries(
            {f"x{i}": st.none() | st.floats(allow_nan=True, allow_infinity=True) for i in range(3)}
        ),
        "categorical": st.fixed_dictionaries({"c0": st.none() | st.text(max_size=30)}),
        "prediction": st.fixed_dictionaries(
            {"score": st.none() | st.floats(), "label": st.none() | st.text(max_size=3)}
        ),
    }
)


@FUZZ
@given(batches=st.lists(st.lists(event_records, min_size=1, max_size=40), min_size=1, max_size=4))
def test_stage1_accounts_for_every_event(batches: list[list[dict]]) -> None:
    profiler = _profiler()
    offset = 0
    for records in batches:
        offset += len(records)
        result = profiler.observe(records, next_offset=offset)
        ghosts = sum(r["model_id"] == "ghost" for r in records)
        assert len(result.unknown) == ghosts
        assert result.profiled + result.late == len(records) - ghosts
        assert all(r.model_id == MODEL for r in result.reports)
    assert profiler.offset_ == offset


def test_a_million_distinct_categories_keep_the_profile_bounded() -> None:
    profiler = _profiler()
    n = 1_000_000
    records = [
        {
            "model_id": MODEL,
            "prediction_id": str(i),
            "event_time": i % 9_000,
            "numeric": {},
            "categorical": {"c0": f"cat-{i}"},
            "prediction": {},
        }
        for i in range(n)
    ]
    result = profiler.observe(records, next_offset=n)
    assert result.profiled == n and not result.unknown
    # unseen categories are one bucket, not a million keys
    held = profiler.state()
    assert len(encode_checkpoint(held)) < 100_000
    closed = profiler.observe([{**records[0], "event_time": 60_000}], next_offset=n + 1)
    assert sum(len(r.to_bytes()) for r in closed.reports) < 100_000


# -- the worker sends every rejected message to the dead-letter topic ------------------------------


def _bad_messages(rng: np.random.Generator) -> list[tuple[bytes, str]]:
    """(message, expected error class) for every kind of bad input, valid events mixed in."""
    valid = {"model_id": MODEL, "prediction_id": "p", "event_time": 5_000}
    good = _raw_avro("FeatureEvent", valid)
    out = []
    for i in range(400):
        kind = i % 8
        if kind == 0:
            out.append((rng.bytes(int(rng.integers(1, 200))), "decode_error"))
        elif kind == 1:
            out.append((good[: int(rng.integers(1, len(good)))], "decode_error"))
        elif kind == 2:
            out.append((_raw_avro("FeatureEvent", {**valid, "event_time": -1}), "decode_error"))
        elif kind == 3:
            out.append((b"\x00\x00\x00\x00\x07" + good, "decode_error"))  # confluent on avro
        elif kind == 4:
            ghost = {**valid, "model_id": "ghost-" + "y" * 100_000}
            out.append((_raw_avro("FeatureEvent", ghost), "unknown_model"))
        elif kind == 5:
            out.append((b'{"model_id": "m"}', "decode_error"))  # JSON on an Avro topic
        elif kind == 6:
            ahead = {**valid, "prediction_id": str(i), "event_time": 253402300799999}
            out.append((_raw_avro("FeatureEvent", ahead), "future_event_time"))
        else:
            event = {**valid, "prediction_id": str(i), "numeric": {"x0": float("nan")}}
            out.append((_raw_avro("FeatureEvent", event), ""))
    return out


@pytest.mark.kafka
def test_every_rejected_message_reaches_the_dead_letter_topic_with_a_reason(
    kafka_bootstrap: str, make_topic
) -> None:
    from workerkit import read_topic, wait_until

    features = make_topic(partitions=2)
    app_id = f"fz{uuid.uuid4().hex[:8]}"
    messages = _bad_messages(np.random.default_rng(3))
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 2_000_000})
    for i, (value, _) in enumerate(messages):
        producer.produce(
            features, value=value, key=str(i).encode(), headers=[("i", str(i).encode())]
        )
    assert producer.flush(30) == 0
    spec = StreamSpec(n_numeric=3, n_categorical=1, seed=1, model_id=MODEL)
    ref = ReferenceProfile.from_batch(take_events(spec, 2_000), CONFIG.model(MODEL))
    engine = ModelEngine(
        CONFIG.model(MODEL),
        lambda: Monitor(CONFIG.model(MODEL), ref),
        Monitor.restore,
        tuple(ref.numeric),
        tuple(ref.categorical),
    )
    streams = StreamsConfig.from_dict(
        {
            "kafka": {"bootstrap_servers": kafka_bootstrap},
            "topics": {"features": features, "alerts": f"{app_id}-alerts"},
            "worker": {"app_id": app_id, "batch_timeout": "100ms", "session_timeout": "6s"},
        },
        env={},
    )
    worker = Worker(streams, {MODEL: engine})
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    try:
        counted = lambda: worker.metrics.events_in.labels(topic=features)._value.get()  # noqa: E731
        wait_until(lambda: counted() >= len(messages), 60)
    finally:
        worker.stop()
        thread.join(30)
    letters = list(read_topic(kafka_bootstrap, f"{app_id}-dead-letter"))
    got = {}
    for msg in letters:
        headers = dict(msg.headers())
        assert headers[dlq.REASON].decode()
        got[int(msg.key())] = (headers[dlq.ERROR].decode(), msg.value())
    expected = {i: (err, value) for i, (value, err) in enumerate(messages) if err}
    assert got == expected


def test_one_far_future_event_does_not_blind_its_partition() -> None:
    profiler = _profiler()
    normal = [
        {"model_id": MODEL, "prediction_id": str(i), "event_time": 1_000 + i, "numeric": {}}
        for i in range(100)
    ]
    future = {**normal[0], "prediction_id": "f", "event_time": 253402300799999}
    first = [*normal[:50], future]
    kept, ahead = split_future(first, limit_ms=10_000_000)  # the worker's clock + max_future
    assert ahead == [50]
    profiler.observe([first[i] for i in kept], next_offset=51)
    result = profiler.observe(normal[50:], next_offset=101)
    assert result.late == 0
