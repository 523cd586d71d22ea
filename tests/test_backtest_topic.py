"""Topic replay against the real broker: bounded ranges, event-time merge, and the backtest
publishes the same alerts as the live worker did for the same topic range."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import fastavro
import numpy as np
import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from driftwire.detectors.alerts import Alert
from driftwire.detectors.batch import FeatureBatch
from driftwire.detectors.generators import MissingSpike, Shift, StreamSpec, generate, take_events
from driftwire.schemas.records import alert_from_record
from driftwire.schemas.serde import Codec, load_schema
from driftwire.streams.cli import app
from driftwire.streams.replay import PartitionRange, TopicRange, topic_steps
from typer.testing import CliRunner

pytestmark = pytest.mark.kafka

PARTITIONS = 3
WINDOW_MS = 10_000
DURATION_MS = 120_000
RATE = 300.0  # events per second of event time: 36,000 events
T0 = 1_700_000_000_000  # a real epoch (Kafka reads 0 as "now"), in the past (no future ones)
FLIP_AT = T0 + 60_000  # the model's error rate goes from 10% to 40%
KEEP = {"retention.ms": "-1"}  # time retention would delete events stamped in the past
DRIFTS = [
    MissingSpike(features=("x5",), start_ms=T0 + 30_000, end_ms=T0 + 50_000, rate=0.3),
    Shift(features=("x3",), start_ms=T0 + 70_000, magnitude=0.6),
]


def feature_records(batch: FeatureBatch) -> list[dict]:
    nums = {k: [None if np.isnan(x) else x for x in v.tolist()] for k, v in batch.numeric.items()}
    cats = {k: v.tolist() for k, v in batch.categorical.items()}
    return [
        {
            "model_id": batch.model_id,
            "model_version": "1",
            "prediction_id": f"{batch.model_id}-{pid}",
            "event_time": t,
            "numeric": {k: v[i] for k, v in nums.items()},
            "categorical": {k: v[i] for k, v in cats.items()},
            "prediction": {"score": float(batch.score[i]), "label": batch.label[i]},
            "segments": {},
        }
        for i, (pid, t) in enumerate(
            zip(batch.prediction_id, batch.event_time.tolist(), strict=True)
        )
    ]


def produce(bootstrap: str, topic: str, records: list[dict], encode: Callable) -> dict[int, int]:
    """Produce with the event time as the Kafka timestamp; max event time per partition."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    highest: dict[int, int] = {}

    def done(err, msg) -> None:
        assert err is None, err
        highest[msg.partition()] = max(highest.get(msg.partition(), 0), msg.timestamp()[1])

    for rec in records:
        while True:
            try:
                producer.produce(
                    topic, encode(rec), rec["prediction_id"].encode(),
                    timestamp=rec["event_time"], on_delivery=done,
                )  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    return highest


def avro_encoder() -> Callable[[dict], bytes]:
    schema = load_schema("FeatureEvent").parsed

    def encode(record: dict) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, record)
        return buf.getvalue()

    return encode


def read_alerts(bootstrap: str, topic: str) -> list[Alert]:
    """Every alert currently on `topic`, in partition/offset order."""
    codec = Codec("DriftAlert", "avro")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        tps = [TopicPartition(topic, p, 0) for p in sorted(meta.partitions)]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        left = {p for p, end in ends.items() if end > 0}
        consumer.assign([tp for tp in tps if tp.partition in left])
        out: list[Alert] = []
        deadline = time.monotonic() + 30
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    out.append(alert_from_record(codec.decode(msg.value())))
                    if msg.offset() + 1 >= ends[msg.partition()]:
                        left.discard(msg.partition())
        return out
    finally:
        consumer.close()


def windows_closed(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return -1
    for line in text.decode().splitlines():
        if line.startswith("driftwire_windows_closed_total{"):
            return float(line.rsplit(" ", 1)[1])
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _without_partitions(alert: Alert) -> tuple:
    """Everything but `partitions_reported` (how many partitions had reported at close)."""
    from dataclasses import astuple, replace

    return astuple(replace(alert, partitions_reported=None))


def outcome_records(records: list[dict], seed: int = 4) -> list[dict]:
    """Ground truth 2 s after each prediction: 10% wrong, 40% wrong after FLIP_AT."""
    rng = np.random.default_rng(seed)
    out = []
    for rec in records:
        wrong = rng.random() < (0.4 if rec["event_time"] >= FLIP_AT else 0.1)
        predicted = rec["prediction"]["label"]
        label = ("0" if predicted == "1" else "1") if wrong else predicted
        out.append(
            {
                "model_id": rec["model_id"],
                "prediction_id": rec["prediction_id"],
                "event_time": rec["event_time"] + 2_000,
                "value": None,
                "label": label,
            }
        )
    return out  # fmt: skip


def test_live_worker_alerts_equal_backtest_alerts(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    features = make_topic(partitions=PARTITIONS, config=KEEP)
    outcomes = make_topic(partitions=2, config=KEEP)
    spec = StreamSpec(n_numeric=6, n_categorical=2, rate=RATE, seed=21, model_id="drifty")
    ref = tmp_path / "ref.jsonl"
    ref.write_text(
        "".join(json.dumps(r) + "\n" for r in feature_records(take_events(spec, 20_000)))
    )
    batches = generate(spec, DURATION_MS, drifts=DRIFTS, start_ms=T0)
    records = [r for b in batches for r in feature_records(b)]
    highest = produce(kafka_bootstrap, features, records, avro_encoder())
    labels = outcome_records(records)
    outcome_codec = Codec("OutcomeEvent", "avro")
    highest_outcome = produce(kafka_bootstrap, outcomes, labels, outcome_codec.encode)
    app_id = f"bt{uuid.uuid4().hex[:8]}"
    live_alerts, replay_alerts = f"{app_id}-alerts", f"{app_id}-replayed"
    config = {
        "kafka": {"bootstrap_servers": kafka_bootstrap},
        "topics": {"features": features, "outcomes": outcomes, "alerts": live_alerts},
        "worker": {"app_id": app_id, "idle_timeout": "10m", "batch_timeout": "100ms"},
        "models": [
            {"id": "drifty", "window": {"size": WINDOW_MS, "min_count": 300},
             "alerts": {"fire_after": 1, "resolve_after": 2},
             "reference": {"source": "file", "path": str(ref)},
             "concept": {"task": "binary", "label_horizon_ms": 5_000, "min_labels": 100}}
        ],
        "backtest": {"source": "topic", "start": 0},
    }  # fmt: skip
    cfg = tmp_path / "driftwire.yaml"
    cfg.write_text(yaml.safe_dump(config))

    # live: the worker closes every pane all partitions passed; wait until it has
    panes_due = (min([*highest.values(), *highest_outcome.values()]) - T0) // WINDOW_MS
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWIRE_")}
    cmd = [sys.executable, "-m", "driftwire.streams", "worker", "--config", str(cfg),
           "--metrics-port", str(port)]  # fmt: skip
    with open(tmp_path / "worker.log", "ab") as log:
        worker = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while windows_closed(port) < panes_due and time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        closed = windows_closed(port)
        assert closed == panes_due, (closed, (tmp_path / "worker.log").read_text()[-3000:])
        time.sleep(2)  # let the last alerts flush to the topic
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    live = read_alerts(kafka_bootstrap, live_alerts)

    # backtest of the same topic range, alerts published to another topic
    out = tmp_path / "report.json"
    run = CliRunner().invoke(
        app,
        ["backtest", "--config", str(cfg), "--no-progress", "--json", str(out),
         "--publish", replay_alerts],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    replayed = read_alerts(kafka_bootstrap, replay_alerts)
    report = json.loads(out.read_text())

    firing = {(a.kind.value, a.feature) for a in live if a.status.value == "firing"}
    assert {("data_quality", "x5"), ("data_drift", "x3")} <= firing  # the scenario is real
    assert ("concept_drift", None) in firing
    assert report["events"] == len(records) + len(labels)
    assert sorted(a.alert_id for a in replayed) == sorted(a.alert_id for a in live)
    assert sorted(map(_without_partitions, replayed)) == sorted(map(_without_partitions, live))
    assert len(report["alerts"]) == len(live)


def _json_decoder(values: list[bytes | None], prange: PartitionRange, offsets: list[int]):
    return [json.loads(v) for v in values if v]


def test_topic_range_is_bounded_and_merged_in_event_time(
    kafka_bootstrap: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=3, config=KEEP)
    # each partition in time order (as a producer writes it), partitions interleaved
    t0 = T0
    records = [
        {"model_id": "m", "prediction_id": f"p{i}", "event_time": t0 + 1_000 * i, "numeric": {}}
        for i in range(3_000)
    ]
    produce(kafka_bootstrap, topic, records, lambda r: json.dumps(r).encode())
    replay = TopicRange({"bootstrap.servers": kafka_bootstrap}, topic,
                        start_ms=t0 + 500_000, end_ms=t0 + 2_000_000, batch_size=257)  # fmt: skip
    replay.plan()
    # written after the replay started: must not be read, the end offsets are fixed
    late = [{**r, "prediction_id": f"late{i}"} for i, r in enumerate(records[600:700])]
    produce(kafka_bootstrap, topic, late, lambda r: json.dumps(r).encode())
    steps = list(topic_steps(replay, _json_decoder))
    times = [r["event_time"] for s in steps for _, recs, _ in s.records for r in recs]
    ids = [r["prediction_id"] for s in steps for _, recs, _ in s.records for r in recs]
    assert sorted(times) == list(range(t0 + 500_000, t0 + 2_000_000, 1_000))
    assert len(ids) == len(set(ids)) and not any(i.startswith("late") for i in ids)
    marks = [s.watermark for s in steps]
    assert marks == sorted(marks) and len(steps) >= 2
    previous = -1
    for step in steps:  # each step holds only events after the previous watermark
        step_times = [r["event_time"] for _, recs, _ in step.records for r in recs]
        assert min(step_times) > previous and max(step_times) <= step.watermark
        previous = step.watermark
    # next offsets reported per partition end at the fixed end offsets
    last_offset = {}
    for step in steps:
        for partition, _, next_offset in step.records:
            last_offset[partition] = next_offset
    assert last_offset == {r.partition: r.end for r in replay.ranges_ if r.size}
