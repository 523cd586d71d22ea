"""The local Kafka broker: real produce/consume round trips and the CLI lifecycle."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from driftwire.streams.broker import (
    STATE_FILE,
    BrokerError,
    LocalBroker,
    ensure_kafka_jars,
    new_cluster_id,
    probe,
)
from driftwire.streams.cli import app
from driftwire.streams.settings import KafkaSettings
from typer.testing import CliRunner


def _needs_java_and_maven() -> None:
    """Skip on a laptop without Java/Maven, but never in CI (the test then fails)."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing and os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        pytest.skip(f"needs {', '.join(missing)}")


def _exited(pid: int) -> bool:
    """Gone, or a zombie its new parent has not reaped yet (containers often don't)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _consume(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=1.0):
                if msg.error() and msg.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(msg.error())
                if not msg.error():
                    messages.append(msg)
    finally:
        consumer.close()
    return messages


# ---------------------------------------------------------------- integration


@pytest.mark.kafka
def test_confluent_produce_consume_roundtrip(kafka_bootstrap, make_topic):
    topic = make_topic(partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})
    delivered, failed = [], []

    def on_delivery(err, msg):
        (failed if err else delivered).append(err or msg)

    sent = [(f"model-{i % 7}".encode(), f"{i}".encode()) for i in range(300)]
    for key, value in sent:
        producer.produce(topic, key=key, value=value, headers={"n": value}, callback=on_delivery)
    assert producer.flush(30) == 0
    assert failed == []
    assert len(delivered) == 300

    received = _consume(kafka_bootstrap, topic, expected=300)
    assert sorted((m.key(), m.value()) for m in received) == sorted(sent)
    assert all(dict(m.headers())["n"] == m.value() for m in received)
    partitions_by_key = defaultdict(set)
    values_by_key = defaultdict(list)
    for m in sorted(received, key=lambda m: (m.partition(), m.offset())):
        partitions_by_key[m.key()].add(m.partition())
        values_by_key[m.key()].append(int(m.value()))
    # Keyed records stay in one partition, in produce order: what the worker relies on.
    assert all(len(p) == 1 for p in partitions_by_key.values())
    assert all(v == sorted(v) for v in values_by_key.values())
    assert len({p for ps in partitions_by_key.values() for p in ps}) > 1


@pytest.mark.kafka
def test_aiokafka_roundtrip_with_settings(kafka_bootstrap, make_topic):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = make_topic(partitions=2)
    settings = KafkaSettings.load(env={}, bootstrap_servers=kafka_bootstrap, client_id="t-aio")

    async def roundtrip() -> list[bytes]:
        producer = AIOKafkaProducer(**settings.aiokafka_kwargs())
        await producer.start()
        try:
            for i in range(50):
                await producer.send(topic, key=b"k%d" % (i % 3), value=b"v%d" % i)
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, group_id=f"g-{topic}", auto_offset_reset="earliest", **settings.aiokafka_kwargs()
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            async with asyncio.timeout(30):
                async for msg in consumer:
                    values.append(msg.value)
                    if len(values) == 50:
                        break
        finally:
            await consumer.stop()
        return values

    values = asyncio.run(roundtrip())
    assert sorted(values) == sorted(b"v%d" % i for i in range(50))


@pytest.mark.kafka
def test_cli_start_status_stop_restart(tmp_path):
    _needs_java_and_maven()
    state_dir = tmp_path / "broker"
    cli = [sys.executable, "-m", "driftwire.streams", "broker"]
    try:
        started = subprocess.run(
            [*cli, "start", "--dir", str(state_dir), "--timeout", "120"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert started.returncode == 0, started.stderr
        bootstrap = started.stdout.strip()
        assert bootstrap.startswith("127.0.0.1:")

        # The CLI process has exited; the broker lives on in its own session.
        status = subprocess.run(
            [*cli, "status", "--dir", str(state_dir), "--json"], capture_output=True, text=True
        )
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["running"] and info["answering"] and info["bootstrap"] == bootstrap
        assert os.getsid(info["pid"]) == info["pid"] != os.getsid(0)
        assert Path(info["log_file"]).stat().st_size > 0  # log4j2 really writes the log

        topic = "cli-roundtrip"
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, key=b"k", value=b"hello")  # auto-created topic
        assert producer.flush(30) == 0
        assert [m.value() for m in _consume(bootstrap, topic, expected=1)] == [b"hello"]
        del producer  # its reconnect attempts would spam stderr once the broker stops

        stopped = subprocess.run([*cli, "stop", "--dir", str(state_dir)], capture_output=True)
        assert stopped.returncode == 0
        assert _exited(info["pid"])
        after = subprocess.run([*cli, "status", "--dir", str(state_dir)], capture_output=True)
        assert after.returncode == 1
        assert not probe(bootstrap, timeout=1)

        # A restart in the same dir keeps the cluster and its data (new ports are fine).
        restarted = LocalBroker(state_dir).start(timeout=120)
        assert LocalBroker(state_dir).status().cluster_id == info["cluster_id"]
        assert [m.value() for m in _consume(restarted, topic, expected=1)] == [b"hello"]
    finally:
        LocalBroker(state_dir).stop(timeout=5)


@pytest.mark.kafka
def test_start_failure_says_why(tmp_path):
    _needs_java_and_maven()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        broker = LocalBroker(tmp_path, port=busy.getsockname()[1])
        with pytest.raises(BrokerError, match="Address already in use"):
            broker.start(timeout=60)
    assert not broker.status().running
    assert not (tmp_path / STATE_FILE).exists()


# ---------------------------------------------------------------- no broker needed


def test_status_and_stop_without_broker(tmp_path):
    broker = LocalBroker(tmp_path)
    assert broker.status().running is False
    assert broker.stop() is False


def test_stale_pid_file_never_kills_another_process(tmp_path):
    # A pid file left behind by a crash may name a pid now reused by something else.
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "port": 1,
                "controller_port": 2,
                "cluster_id": "x",
                "version": "4.4.0",
            }
        )
    )
    broker = LocalBroker(tmp_path)
    assert broker.status().running is False
    assert broker.stop(timeout=1) is False  # and we are still alive to assert it


def test_cluster_id_is_a_kafka_uuid():
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
        assert not cid.startswith("-")


def test_cli_help_lists_broker_commands():
    runner = CliRunner()
    root = runner.invoke(app, ["--help"])
    assert root.exit_code == 0
    assert "broker" in root.output
    sub = runner.invoke(app, ["broker", "--help"])
    assert sub.exit_code == 0
    for command in ("start", "stop", "status", "fetch"):
        assert command in sub.output


def test_cli_rejects_bad_log_level():
    result = CliRunner().invoke(app, ["--log-level", "LOUD", "env"])
    assert result.exit_code != 0


def test_bad_kafka_version_is_rejected_before_maven(tmp_path):
    with pytest.raises(BrokerError, match="must look like"):
        ensure_kafka_jars("4.4.0/../../etc", home=tmp_path)
    assert not (tmp_path / "kafka").exists()
