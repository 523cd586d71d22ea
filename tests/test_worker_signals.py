"""Issue 8's production signals through the live worker and the backtester, one scenario.

One produce, one worker, several models over a 3-partition topic:

- ``steady``: flows at a constant rate with a stationary latency (the quiet control);
- ``stops``: its traffic stops at T0 + 50 s while the others keep flowing -> ``silence``;
- ``halved``: half its traffic is gone from T0 + 60 s -> ``volume``;
- ``slow``: its latency p99 goes from ~40 ms to ~120 ms at T0 + 60 s -> ``latency``;
- ``rollout``: version v1, then v2 from T0 + 60 s, same data -> ``lifecycle``, no drift;
- ``champ`` and two challengers on the same prediction ids: ``chall-shift`` scores
  sqrt(champion score) -> ``shadow_divergence``; ``chall-same`` scores identically -> quiet.

Then the backtester replays the same topic range: same alert ids.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import fastavro
import numpy as np
import pytest
import yaml
from confluent_kafka import Producer
from driftwire.detectors.alerts import Alert
from driftwire.detectors.batch import FeatureBatch
from driftwire.detectors.generators import StreamSpec, generate, take_events
from driftwire.schemas.serde import load_schema
from driftwire.streams.cli import app
from typer.testing import CliRunner

from tests.workerkit import read_alerts, start_worker, stop

pytestmark = pytest.mark.kafka

PARTITIONS = 3
WINDOW_MS = 10_000
DURATION_MS = 120_000
RATE = 100.0  # events per second of event time, per model
T0 = 1_700_000_000_000
CHANGE_AT = T0 + 60_000
STOP_AT = T0 + 50_000
SILENCE_AFTER = 20_000
KEEP = {"retention.ms": "-1"}
MODELS = ("steady", "stops", "halved", "slow", "rollout", "champ", "chall-shift", "chall-same")
SIGNALS = {"volume": {"silence_after": SILENCE_AFTER}, "latency": {}}


def latencies(rng: np.random.Generator, n: int) -> np.ndarray:
    """Log-normal serving times: p50 10 ms, p99 ~40 ms."""
    return 10.0 * np.exp(0.6 * rng.standard_normal(n))


def records_of(batch: FeatureBatch, pids: np.ndarray, latency: np.ndarray, version) -> list[dict]:
    nums = {k: v.tolist() for k, v in batch.numeric.items()}
    cats = {k: v.tolist() for k, v in batch.categorical.items()}
    versions = np.broadcast_to(np.asarray(version, dtype=object), (len(batch),))
    return [
        {
            "model_id": batch.model_id,
            "model_version": versions[i],
            "prediction_id": pids[i],
            "event_time": t,
            "numeric": {k: v[i] for k, v in nums.items()},
            "categorical": {k: v[i] for k, v in cats.items()},
            "prediction": {"score": float(batch.score[i]), "label": batch.label[i]},
            "segments": {},
            "latency_ms": float(latency[i]),
        }
        for i, t in enumerate(batch.event_time.tolist())
    ]


def scenario_records(tmp_path: Path) -> list[dict]:
    """Every model's events (and its reference file), ground truth as in the module doc."""
    rng = np.random.default_rng(5)
    out: list[dict] = []
    champ: FeatureBatch | None = None
    for k, model in enumerate(MODELS):
        spec = StreamSpec(n_numeric=4, n_categorical=1, rate=RATE, seed=30 + k, model_id=model)
        if model.startswith("chall"):  # same events as the champion, own scores
            spec = StreamSpec(**{**spec.__dict__, "seed": 30 + MODELS.index("champ")})
        ref = take_events(spec, 6_000)
        ref_pids = np.array([f"ref-{p}" for p in ref.prediction_id], dtype=object)
        lines = records_of(ref, ref_pids, latencies(rng, len(ref)), "v1")
        (tmp_path / f"ref-{model}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        batch = next(iter(generate(spec, DURATION_MS, start_ms=T0, batch_size=10**7)))
        if model == "champ":
            champ = batch
        if model == "chall-shift":
            batch.score = np.sqrt(batch.score)
        t = batch.event_time
        keep = np.ones(len(batch), dtype=bool)
        if model == "stops":
            keep = t < STOP_AT
        elif model == "halved":
            keep = (t < CHANGE_AT) | (rng.random(len(batch)) < 0.5)
        latency = latencies(rng, len(batch))
        if model == "slow":
            latency = np.where(t >= CHANGE_AT, 3.0 * latency, latency)
        version = np.where(t >= CHANGE_AT, "v2", "v1") if model == "rollout" else "v1"
        pids = np.array([f"p-{p}" for p in batch.prediction_id], dtype=object)
        if model in ("champ", "chall-shift", "chall-same"):
            assert champ is not None and np.array_equal(champ.event_time, t)
        rows = np.flatnonzero(keep)
        out += [r for i, r in enumerate(records_of(batch, pids, latency, version)) if keep[i]]
        assert len(rows)
    out.sort(key=lambda r: (r["event_time"], r["model_id"]))
    return out


def model_section(model: str, tmp_path: Path) -> dict:
    section: dict = {
        "id": model,
        "window": {"size": WINDOW_MS, "min_count": 200},
        "alerts": {"fire_after": 1, "resolve_after": 2},
        "reference": {"source": "file", "path": str(tmp_path / f"ref-{model}.jsonl")},
    }
    if model in ("steady", "stops", "halved", "slow"):
        section |= SIGNALS
    if model == "rollout":
        section["versions"] = {"retire_after": 30_000}
    if model.startswith("chall"):
        section["shadow"] = {"champion": "champ", "min_count": 200}
    return section


def produce(bootstrap: str, topic: str, records: list[dict]) -> None:
    schema = load_schema("FeatureEvent").parsed
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    buf = io.BytesIO()
    for rec in records:
        buf.seek(0)
        buf.truncate()
        fastavro.schemaless_writer(buf, schema, rec)
        while True:
            try:
                producer.produce(topic, buf.getvalue(), rec["prediction_id"].encode(),
                                 timestamp=rec["event_time"])  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def wait_quiet(read: Callable[[], list[Alert]], done: Callable[[list[Alert]], bool]) -> list[Alert]:
    """Alerts once `done` holds and nothing new arrived for 3 s."""
    deadline = time.monotonic() + 120
    alerts = read()
    while time.monotonic() < deadline and not done(alerts):
        time.sleep(1)
        alerts = read()
    while time.monotonic() < deadline:
        time.sleep(3)
        again = read()
        if len(again) == len(alerts):
            return again
        alerts = again
    return alerts


def firing(alerts: list[Alert], model: str, kind: str) -> list[Alert]:
    return [a for a in alerts if a.model_id == model and a.kind.value == kind
            and a.status.value == "firing"]  # fmt: skip


def test_production_signals_live_and_backtest(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    features = make_topic(partitions=PARTITIONS, config=KEEP)
    produce(kafka_bootstrap, features, scenario_records(tmp_path))
    app_id = f"sig{uuid.uuid4().hex[:8]}"
    live_topic, replay_topic = f"{app_id}-alerts", f"{app_id}-replayed"
    config = {
        "kafka": {"bootstrap_servers": kafka_bootstrap},
        "topics": {"features": features, "alerts": live_topic},
        "worker": {"app_id": app_id, "idle_timeout": "10m", "batch_timeout": "100ms"},
        "models": [model_section(m, tmp_path) for m in MODELS],
        "backtest": {"source": "topic", "start": 0},
    }
    cfg = tmp_path / "driftwire.yaml"
    cfg.write_text(yaml.safe_dump(config))

    def expected_seen(alerts: list[Alert]) -> bool:
        wanted = [("stops", "silence"), ("halved", "volume"), ("slow", "latency"),
                  ("rollout", "lifecycle"), ("chall-shift", "shadow_divergence")]  # fmt: skip
        return all(firing(alerts, m, k) for m, k in wanted)

    worker = start_worker(cfg, tmp_path / "worker.log")
    try:
        live = wait_quiet(lambda: read_alerts(kafka_bootstrap, live_topic), expected_seen)
        assert worker.proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        stop(worker)
    log_tail = (tmp_path / "worker.log").read_text()[-3000:]

    # silence: within the configured time of the last event, and only for the silent model
    silence = firing(live, "stops", "silence")
    assert silence, log_tail
    assert min(a.window_end for a in silence) <= STOP_AT + SILENCE_AFTER + WINDOW_MS
    assert not [a for a in live if a.kind.value == "silence" and a.model_id != "stops"]
    # volume: the halved model, at the change, and not the steady one
    volume = firing(live, "halved", "volume")
    assert volume and min(a.window_start for a in volume) >= CHANGE_AT - WINDOW_MS
    assert not firing(live, "steady", "volume")
    # latency: p99 40 -> 120 ms flagged at the change; the stationary ones stay quiet
    slow = firing(live, "slow", "latency")
    assert slow and min(a.window_start for a in slow) >= CHANGE_AT - WINDOW_MS
    assert not [a for m in ("steady", "halved") for a in firing(live, m, "latency")]
    # nothing in the stationary data drifts
    drift_kinds = ("data_drift", "prediction_drift")
    assert not [a for m in MODELS for k in drift_kinds for a in firing(live, m, k)
                if m != "chall-shift"]  # fmt: skip
    # roll-out: one lifecycle event per version, no drift because of it
    rollout = {(a.feature, a.window_start) for a in firing(live, "rollout", "lifecycle")}
    assert ("v2", CHANGE_AT) in rollout and any(v == "v1" for v, _ in rollout), rollout
    # shadow: the shifted challenger is flagged, the identical one is not
    assert firing(live, "chall-shift", "shadow_divergence")
    assert not firing(live, "chall-same", "shadow_divergence")

    # the backtester over the same topic range gives the same alert ids
    run = CliRunner().invoke(
        app, ["backtest", "--config", str(cfg), "--no-progress", "--publish", replay_topic]
    )
    assert run.exit_code == 0, run.output
    replayed = read_alerts(kafka_bootstrap, replay_topic)
    assert sorted(a.alert_id for a in replayed) == sorted(a.alert_id for a in live)
