"""Driving `driftwire worker` processes against a real broker, shared by the kafka tests.

:func:`build_scenario` produces 200,000 FeatureEvents (by default) of two models over a
4-partition topic -- ``drifty`` with injected data-quality, data, prediction and concept
drift, ``control`` stationary -- plus outcomes, 1% malformed messages and a few events of
an unknown model. The expected alerts come from running the same engine in-process over
the same events, closed at the watermark every partition reached. Workers run as
subprocesses (:func:`start_worker`) so SIGKILL is real.
"""

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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fastavro
import numpy as np
import yaml
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from driftwire.detectors.alerts import Alert
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.config import parse_config
from driftwire.detectors.generators import MissingSpike, Shift, StreamSpec, generate, take_events
from driftwire.detectors.monitor import Monitor
from driftwire.detectors.reference import ReferenceProfile
from driftwire.schemas.records import alert_from_record
from driftwire.schemas.serde import Codec, load_schema

PARTITIONS = 4
DURATION_MS = 200_000
RATE = 500.0  # events/s of event time per model: 2 x 100,000 events
MODELS = {
    "drifty": [
        MissingSpike(features=("x5",), start_ms=40_000, end_ms=60_000, rate=0.3),
        Shift(features=("x3",), start_ms=100_000, magnitude=0.5),
        Shift(features=("x0", "x1"), start_ms=150_000, magnitude=1.0),
    ],
    "control": [],
}
MODEL_SECTION = {
    "window": {"size": "10s", "min_count": 500},
    "alerts": {"fire_after": 1, "resolve_after": 2},
    "concept": {"label_ttl_ms": 10_000, "label_horizon_ms": 3_000},
}
PANE_MS = 10_000
LABELLED = 0.4  # share of predictions whose outcome arrives (0-2 s later)
ERROR_RATE = {"drifty": (0.05, 0.35, 120_000), "control": (0.05, 0.05, 0)}  # before, after, at


def feature_records(batch: FeatureBatch) -> list[dict]:
    """FeatureEvent records of a generated batch (missing numeric -> None)."""
    nums = {k: [None if np.isnan(x) else x for x in v.tolist()] for k, v in batch.numeric.items()}
    cats = {k: v.tolist() for k, v in batch.categorical.items()}
    out = []
    for i, (pid, t, score, label) in enumerate(
        zip(batch.prediction_id, batch.event_time.tolist(), batch.score, batch.label, strict=True)
    ):
        out.append(
            {
                "model_id": batch.model_id,
                "model_version": "1",
                "prediction_id": pid,
                "event_time": t,
                "numeric": {k: v[i] for k, v in nums.items()},
                "categorical": {k: v[i] for k, v in cats.items()},
                "prediction": {"score": float(score), "label": label},
                "segments": {},
            }
        )
    return out


@dataclass
class Scenario:
    bootstrap: str
    workdir: Path
    features: str
    expected: set[tuple[str, str, str, str | None, str, int]]  # (model, kind, det, feat, st, ws)
    expected_ids: set[str]
    bad: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset) malformed
    unknown: set[tuple[int, int]] = field(default_factory=set)  # unknown model id
    valid: int = 0
    outcomes: str = ""
    n_outcomes: int = 0
    panes_closed: dict[str, int] = field(default_factory=dict)

    def config(self, app_id: str, alerts: str) -> Path:
        models = [
            {"id": m, **MODEL_SECTION, "reference": {"source": "file", "path": str(self.ref(m))}}
            for m in MODELS
        ]
        raw = {
            "kafka": {"bootstrap_servers": self.bootstrap},
            "topics": {"features": self.features, "outcomes": self.outcomes, "alerts": alerts},
            "worker": {
                "app_id": app_id,
                "idle_timeout": "20s",
                "batch_timeout": "100ms",
                "session_timeout": "6s",  # the broker's minimum: a SIGKILLed worker is noticed fast
            },
            "models": models,
        }
        path = self.workdir / f"{app_id}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def ref(self, model: str) -> Path:
        return self.workdir / f"ref-{model}.jsonl"


def _engine_config():
    return parse_config({"models": [{"id": m, **MODEL_SECTION} for m in MODELS]})


def outcomes_for(preds: FeatureBatch, rng: np.random.Generator) -> OutcomeBatch:
    """Labels for a share of the predictions; the model's error rate steps up for `drifty`."""
    n = len(preds)
    before, after, at = ERROR_RATE[preds.model_id]
    wrong = rng.random(n) < np.where(preds.event_time >= at, after, before)
    truth = np.where(wrong == (preds.label == "1"), "0", "1").astype(object)
    arrival = preds.event_time + rng.integers(0, 2_000, n)
    picked = np.flatnonzero(rng.random(n) < LABELLED)
    picked = picked[np.argsort(arrival[picked], kind="stable")]
    return OutcomeBatch(preds.model_id, preds.prediction_id[picked], arrival[picked], truth[picked])


def _expected(preds: FeatureBatch, outs: OutcomeBatch, ref, last_due: int) -> list[Alert]:
    """The in-process engine fed pane by pane, the order the worker's stage 2 uses."""
    mon = Monitor(_engine_config().model(preds.model_id), ref)
    p_end = preds.event_time - preds.event_time % PANE_MS + PANE_MS
    o_end = outs.event_time - outs.event_time % PANE_MS + PANE_MS
    alerts: list[Alert] = []
    for end in range(int(p_end.min()), last_due + 1, PANE_MS):
        rows = _canonical(preds.prediction_id, preds.event_time, p_end == end)
        if len(rows):
            alerts += mon.update_features(preds.take(rows))
        rows = _canonical(outs.prediction_id, outs.event_time, o_end == end)
        if len(rows):
            alerts += mon.update_outcomes(outs.take(rows))
        alerts += mon.advance(end)
    return alerts


def _canonical(pids: np.ndarray, times: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(mask)
    return rows[np.lexsort((pids[rows].astype(str), times[rows]))]


def build_scenario(kafka_bootstrap: str, workdir: Path, duration_ms: int = DURATION_MS) -> Scenario:
    """Produce the scenario's topics on `kafka_bootstrap`; expected alerts from the engine."""
    from confluent_kafka.admin import AdminClient, NewTopic

    features, outcomes = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("features", "outcomes"))
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    new = [NewTopic(t, PARTITIONS, 1) for t in (features, outcomes)]
    for future in admin.create_topics(new).values():
        future.result(30)
    cfg = _engine_config()
    rng = np.random.default_rng(11)
    refs, preds, outs, records = {}, {}, {}, []
    for k, (model, drifts) in enumerate(MODELS.items()):
        spec = StreamSpec(n_numeric=8, n_categorical=2, rate=RATE, seed=7 + k, model_id=model)
        ref_batch = take_events(spec, 20_000)
        refs[model] = ReferenceProfile.from_batch(ref_batch, cfg.model(model))
        with open(workdir / f"ref-{model}.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in feature_records(ref_batch))
        batch = next(iter(generate(spec, duration_ms, drifts=drifts, batch_size=10**7)))
        batch.prediction_id = np.array([f"{model}-{p}" for p in batch.prediction_id], object)
        preds[model], outs[model] = batch, outcomes_for(batch, rng)
        records += feature_records(batch)
    records.sort(key=lambda r: (r["event_time"], r["model_id"]))
    scn = Scenario(kafka_bootstrap, workdir, features, set(), set(), valid=len(records))
    scn.outcomes = outcomes
    scn.n_outcomes = sum(len(o) for o in outs.values())
    max_time = _produce(scn, records)
    max_time |= {("o", p): t for p, t in _produce_outcomes(scn, list(outs.values())).items()}
    last_due = min(max_time.values()) // PANE_MS * PANE_MS
    alerts = [a for m in MODELS for a in _expected(preds[m], outs[m], refs[m], last_due)]
    scn.expected = {shape(a) for a in alerts}
    scn.expected_ids = {a.alert_id for a in alerts}
    return scn


def _produce_outcomes(scn: Scenario, batches: list[OutcomeBatch]) -> dict[int, int]:
    """OutcomeEvents in arrival order, keyed by prediction id; max event time per partition."""
    codec = Codec("OutcomeEvent", "avro")
    producer = Producer({"bootstrap.servers": scn.bootstrap, "linger.ms": 20})
    rows = sorted(
        (int(t), b.model_id, str(pid), str(label))
        for b in batches
        for pid, t, label in zip(b.prediction_id, b.event_time, b.label, strict=True)
    )
    max_time: dict[int, int] = {}

    def done_at(t: int):
        def done(err, msg) -> None:
            assert err is None, err
            max_time[msg.partition()] = max(max_time.get(msg.partition(), 0), t)

        return done

    for t, model, pid, label in rows:
        record = {"model_id": model, "prediction_id": pid, "event_time": t, "label": label}
        _send(producer, scn.outcomes, pid.encode(), codec.encode(record), done_at(t))
    producer.flush(60)
    return max_time


def _produce(scn: Scenario, records: list[dict]) -> dict[int, int]:
    """Produce events, 1% garbage and a few unknown-model events; max event time per partition."""
    schema = load_schema("FeatureEvent").parsed
    producer = Producer(
        {"bootstrap.servers": scn.bootstrap, "linger.ms": 20, "batch.num.messages": 10_000}
    )
    rng = np.random.default_rng(1)
    max_time: dict[int, int] = {}

    def remember(kind: set, time_ms: int | None):
        def done(err, msg):
            assert err is None, err
            if time_ms is not None:
                max_time[msg.partition()] = max(max_time.get(msg.partition(), 0), time_ms)
            if kind is not None:
                kind.add((msg.partition(), msg.offset()))

        return done

    buf = io.BytesIO()
    for i, rec in enumerate(records):
        buf.seek(0)
        buf.truncate()
        fastavro.schemaless_writer(buf, schema, rec)
        key = rec["prediction_id"].encode()
        _send(producer, scn.features, key, buf.getvalue(), remember(None, rec["event_time"]))
        if rng.random() < 0.01:  # a malformed message: truncated or random bytes
            junk = buf.getvalue()[: int(rng.integers(1, 20))] if i % 2 else rng.bytes(40)
            _send(producer, scn.features, key, junk, remember(scn.bad, None))
        if i % 40_000 == 0:  # an event of a model nobody configured
            ghost = {**rec, "model_id": "ghost"}
            buf.seek(0)
            buf.truncate()
            fastavro.schemaless_writer(buf, schema, ghost)
            _send(producer, scn.features, key, buf.getvalue(), remember(scn.unknown, None))
    producer.flush(60)
    return max_time


def _send(producer: Producer, topic: str, key: bytes, value: bytes, callback) -> None:
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.1)


def shape(a: Alert) -> tuple[str, str, str, str | None, str, int]:
    return (a.model_id, a.kind.value, a.detector, a.feature, a.status.value, a.window_start)


# -- running workers and reading their output ---------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WorkerProc:
    proc: subprocess.Popen
    port: int

    def metrics(self) -> dict[str, float]:
        """Sample name{labels} -> value from the worker's /metrics."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read()
        out = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def health(self) -> int:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health").status
        except urllib.error.HTTPError as exc:
            return exc.code


def start_worker(config: Path, log: Path) -> WorkerProc:
    port = free_port()
    cmd = [sys.executable, "-m", "driftwire.streams", "--log-level", "INFO", "worker"]
    cmd += ["--config", str(config), "--metrics-port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWIRE_")}
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    return WorkerProc(proc, port)


def stop(worker: WorkerProc, timeout: float = 30) -> int:
    worker.proc.send_signal(signal.SIGTERM)
    return worker.proc.wait(timeout)


def read_topic(bootstrap: str, topic: str, client: dict | None = None) -> Iterator:
    """Every message currently in `topic` (all partitions), then stop; `client`: e.g. SASL."""
    consumer = Consumer({**(client or {}), "bootstrap.servers": bootstrap, "group.id": "reader"})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    tps = [TopicPartition(topic, p, 0) for p in meta.partitions]
    ends = {tp.partition: _end_offset(consumer, tp) for tp in tps}
    consumer.assign([tp for tp in tps if ends[tp.partition] > 0])
    seen = {p: 0 for p, e in ends.items() if e > 0}
    deadline = time.monotonic() + 30
    while seen and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.5):
            if msg.error():
                continue
            yield msg
            seen[msg.partition()] = msg.offset() + 1
            if seen[msg.partition()] >= ends[msg.partition()]:
                del seen[msg.partition()]
    consumer.close()


def _end_offset(consumer: Consumer, tp: TopicPartition) -> int:
    for _ in range(100):  # a topic created a moment ago may have no leader yet
        try:
            return consumer.get_watermark_offsets(tp, timeout=10)[1]
        except KafkaException:
            time.sleep(0.2)
    return consumer.get_watermark_offsets(tp, timeout=10)[1]


def read_alerts(bootstrap: str, topic: str, client: dict | None = None) -> list[Alert]:
    codec = Codec("DriftAlert", "avro")
    try:
        messages = read_topic(bootstrap, topic, client)
        return [alert_from_record(codec.decode(m.value())) for m in messages]
    except KeyError:  # topic not created yet
        return []


def wait_for_alerts(scn: Scenario, topic: str, timeout: float = 120) -> list[Alert]:
    """Alerts once every expected id is on the topic, plus a quiet period for extras."""
    deadline = time.monotonic() + timeout
    alerts: list[Alert] = []
    while time.monotonic() < deadline:
        alerts = read_alerts(scn.bootstrap, topic)
        if scn.expected_ids <= {a.alert_id for a in alerts}:
            time.sleep(3)
            return read_alerts(scn.bootstrap, topic)
        time.sleep(1)
    return alerts


def run_id() -> str:
    return f"dw{uuid.uuid4().hex[:8]}"


def wait_until(predicate, timeout: float = 60, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(every)


def consumed(worker: WorkerProc, scn: Scenario) -> float:
    """Feature messages the worker consumed so far (0 while its endpoint is not up)."""
    try:
        return worker.metrics().get(f'driftwire_events_in_total{{topic="{scn.features}"}}', 0.0)
    except OSError:  # endpoint not up yet
        return 0.0
