"""`driftwire reference build`: help, from a file, from a real topic range to the compacted
references topic, and errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from driftwire.detectors.config import load_config
from driftwire.detectors.reference import ReferenceProfile
from driftwire.schemas.serde import Codec

MODELS = """
models:
  - id: fraud
    numeric: [amount, age]
    categorical: [channel]
"""


def _run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "driftwire.streams.cli", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWIRE_")}
    env["COLUMNS"] = "200"  # rich wraps tables and usage errors at 80 columns
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _config(tmp_path: Path, topics: str = "", bootstrap: str = "127.0.0.1:1") -> Path:
    path = tmp_path / "driftwire.yaml"
    path.write_text(f"kafka: {{bootstrap_servers: '{bootstrap}'}}\n{topics}{MODELS}")
    return path


@pytest.fixture
def reference_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    n = 4000
    table = pa.table(
        {
            "amount": rng.lognormal(3, 1, n),
            "age": np.where(rng.random(n) < 0.1, np.nan, rng.normal(40, 10, n)),
            "channel": rng.choice(["web", "app", "store"], n, p=[0.6, 0.3, 0.1]),
            "score": rng.random(n),
            "event_time": np.arange(n, dtype=np.int64) * 1000,
        }
    )
    path = tmp_path / "reference.parquet"
    pq.write_table(table, path)
    return path


def test_help_lists_sources_and_destinations() -> None:
    result = _run("reference", "build", "--help")
    assert result.returncode == 0
    for option in (
        "--model",
        "--from-file",
        "--from-topic",
        "--start",
        "--end",
        "--out",
        "--publish",
        "--effective-from",
    ):
        assert option in result.stdout


def test_builds_from_a_file_the_same_profile_the_engine_builds(
    tmp_path: Path, reference_file: Path
) -> None:
    config = _config(tmp_path)
    out = tmp_path / "fraud.ref.avro"
    result = _run("reference", "build", "-c", str(config), "-m", "fraud",
                  "--from-file", str(reference_file), "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    written = ReferenceProfile.from_bytes(out.read_bytes())
    expected = ReferenceProfile.from_file(reference_file, load_config(config).model("fraud"))
    assert written.reference_id == expected.reference_id
    assert written.count == 4000
    assert written.numeric["age"].missing == expected.numeric["age"].missing > 0
    # the summary names every learned column and its missing share
    for shown in ("amount", "age", "channel", "prediction.score", written.reference_id):
        assert shown in result.stdout
    age_line = next(line for line in result.stdout.splitlines() if " age " in line)
    assert f"{expected.numeric['age'].missing / 4000:.1%}" in age_line


def _event(i: int, model: str, time_ms: int, rng: np.random.Generator) -> dict:
    return {
        "model_id": model,
        "model_version": "1",
        "prediction_id": f"{model}-{i}",
        "event_time": time_ms,
        "numeric": {"amount": float(rng.lognormal(3, 1)), "age": float(rng.normal(40, 10))},
        "categorical": {"channel": str(rng.choice(["web", "app"]))},
        "prediction": {"score": float(rng.random()), "label": None},
        "segments": {},
        "latency_ms": None,
    }


@pytest.mark.kafka
def test_builds_from_a_topic_range_and_publishes_keyed_by_model(
    kafka_bootstrap: str, make_topic, tmp_path: Path
) -> None:
    features = make_topic(partitions=2)
    references = make_topic(partitions=1, config={"cleanup.policy": "compact"})
    base = 1_790_000_000_000  # in the past: brokers reject far-future timestamps
    rng = np.random.default_rng(3)
    codec = Codec("FeatureEvent", "avro")
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    failed: list = []
    events = [_event(i, "fraud" if i % 4 else "other", base + i * 1000, rng) for i in range(3000)]
    for event in events:
        producer.produce(
            features,
            codec.encode(event),
            key=event["prediction_id"],
            timestamp=event["event_time"],
            on_delivery=lambda err, _msg: failed.append(err) if err else None,
        )
    assert producer.flush(10) == 0 and not failed
    topics = f"topics: {{features: {features}, alerts: unused-alerts, references: {references}}}\n"
    config = _config(tmp_path, topics, kafka_bootstrap)

    # the range selects by the message timestamp: events 1000..1999 (end exclusive)
    result = _run("reference", "build", "-c", str(config), "-m", "fraud", "--from-topic",
                  "--start", str(base + 1_000_000), "--end", str(base + 2_000_000),
                  "--publish", "--effective-from", str(base + 5_000_000))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"published to {references}" in result.stdout

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "t-ref-reader"})
    consumer.assign([TopicPartition(references, 0, 0)])
    msg = consumer.poll(20)
    consumer.close()
    assert msg is not None and msg.error() is None
    assert msg.key() == b"fraud"
    profile = ReferenceProfile.from_bytes(msg.value())
    in_range = [e for e in events[1000:2000] if e["model_id"] == "fraud"]
    assert profile.model_id == "fraud" and profile.count == len(in_range) == 750
    assert profile.created_at == max(e["event_time"] for e in in_range)
    web = sum(e["categorical"]["channel"] == "web" for e in in_range)
    channel = profile.categorical["channel"]
    assert int(channel.counts[list(channel.categories).index("web")]) == web
    amounts = np.array([e["numeric"]["amount"] for e in in_range])
    assert profile.numeric["amount"].mean == pytest.approx(amounts.mean())
    assert dict(msg.headers())["driftwire.reference_id"] == profile.reference_id.encode()
    assert dict(msg.headers())["driftwire.effective_from"] == str(base + 5_000_000).encode()


def test_unreachable_broker_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    config = _config(tmp_path, "topics: {features: f, alerts: a}\n")
    started = time.monotonic()
    result = _run("reference", "build", "-c", str(config), "-m", "fraud", "--from-topic",
                  "--out", str(tmp_path / "x.avro"), "--timeout", "3", timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert "cannot reach the broker" in result.stderr and "127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 20
    assert not (tmp_path / "x.avro").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "fraud", "--out", "x.avro"], "exactly one of --from-file PATH or --from-topic"),
        (["-m", "fraud", "--from-topic"], "--out FILE and/or --publish"),
        (["-m", "nope", "--from-topic", "--out", "x.avro"], "no model 'nope'"),
        (["-m", "fraud", "--from-topic", "--out", "x.avro"], "topics.features is required"),
        (
            ["-m", "fraud", "--from-topic", "--out", "x.avro", "--effective-from", "5m"],
            "--effective-from goes with --publish",
        ),
        (
            ["-m", "fraud", "--from-topic", "--publish", "--effective-from", "soon"],
            "a delay like 5m",
        ),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = _run("reference", "build", "-c", str(_config(tmp_path)), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_is_a_usage_error_and_bad_data_is_an_error(tmp_path: Path) -> None:
    missing = _run("reference", "build", "-c", "/nonexistent/driftwire.yaml", "-m", "fraud",
                   "--from-topic", "--publish")  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    lacking = tmp_path / "lacking.csv"
    lacking.write_text("amount,age,channel\n1.0,30,web\n2.0,40,app\n")  # no score column
    result = _run("reference", "build", "-c", str(_config(tmp_path)), "-m", "fraud",
                  "--from-file", str(lacking), "--out", str(tmp_path / "x.avro"))  # fmt: skip
    assert result.returncode == 1
    assert "prediction.score is watched but the reference has no score" in result.stderr
    assert "Traceback" not in missing.stderr + result.stderr
