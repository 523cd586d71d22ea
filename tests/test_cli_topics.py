"""`driftwire topics create`: help, creation against a real broker, idempotence, mismatches,
dry runs and errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from driftwire.streams.cli_topics import plan_topics
from driftwire.streams.config import StreamsConfig


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "driftwire.streams.cli", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWIRE_")}
    env["COLUMNS"] = "200"  # rich wraps usage errors in a box at 80 columns
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def app_id(kafka_admin: AdminClient) -> Iterator[str]:
    """A unique app id (all topic names derive from it); its topics are deleted afterwards."""
    name = f"tt-{uuid.uuid4().hex[:8]}"
    yield name
    ours = [t for t in kafka_admin.list_topics(timeout=10).topics if t.startswith(name)]
    if ours:
        kafka_admin.delete_topics(ours, operation_timeout=0)


def _config(tmp_path: Path, app_id: str, bootstrap: str = "127.0.0.1:1") -> Path:
    path = tmp_path / "driftwire.yaml"
    path.write_text(
        f"kafka: {{bootstrap_servers: '{bootstrap}'}}\n"
        f"topics: {{features: {app_id}-features, outcomes: {app_id}-outcomes, "
        f"alerts: {{name: {app_id}-alerts, partitions: 2}}}}\n"
        f"worker: {{app_id: {app_id}}}\n"
        "models: [{id: m}]\n"
    )
    return path


def _topic_configs(admin: AdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ResourceType.TOPIC, n) for n in names]
    return {
        r.name: {k: e.value for k, e in f.result(timeout=10).items()}
        for r, f in admin.describe_configs(resources).items()
    }


def test_help_lists_the_options() -> None:
    result = _run("topics", "create", "--help")
    assert result.returncode == 0
    for option in ("--config", "--partitions", "--replication-factor", "--retention", "--dry-run"):
        assert option in result.stdout


def test_plan_copartitions_outcomes_and_compacts_references() -> None:
    raw = {"topics": {"features": "f", "outcomes": "o", "alerts": "a"}, "worker": {"app_id": "x"}}
    plan = {t.role: t for t in plan_topics(StreamsConfig.from_dict(raw, env={}), partitions=12)}
    assert plan["outcomes"].partitions == plan["features"].partitions == 12
    assert plan["partials"].partitions == 12
    assert plan["references"].name == "x-references" and plan["references"].compact
    assert not plan["features"].compact


@pytest.mark.kafka
def test_creates_every_topic_then_says_exists(
    kafka_bootstrap: str, kafka_admin: AdminClient, app_id: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, app_id, kafka_bootstrap)
    first = _run("topics", "create", "--config", str(config), "--partitions", "3",
                 "--retention", "2d")  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("created") == 7

    topics = kafka_admin.list_topics(timeout=10).topics
    counts = {n: len(t.partitions) for n, t in topics.items() if n.startswith(app_id)}
    assert counts == {
        f"{app_id}-features": 3,
        f"{app_id}-outcomes": 3,
        f"{app_id}-alerts": 2,
        f"{app_id}-dead-letter": 1,
        f"{app_id}-references": 1,
        f"{app_id}-partials": 3,
        f"{app_id}-checkpoints": 1,
    }
    configs = _topic_configs(kafka_admin, [f"{app_id}-references", f"{app_id}-features"])
    assert configs[f"{app_id}-references"]["cleanup.policy"] == "compact"
    assert configs[f"{app_id}-features"]["cleanup.policy"] == "delete"
    assert configs[f"{app_id}-features"]["retention.ms"] == str(2 * 86_400_000)

    second = _run("topics", "create", "--config", str(config), "--partitions", "3")
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("exists") == 7 and "created" not in second.stdout


@pytest.mark.kafka
def test_partition_mismatch_is_an_error_and_dry_run_changes_nothing(
    kafka_bootstrap: str, kafka_admin: AdminClient, app_id: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, app_id, kafka_bootstrap)
    dry = _run("topics", "create", "--config", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would create" in dry.stdout
    assert not [t for t in kafka_admin.list_topics(timeout=10).topics if t.startswith(app_id)]

    assert _run("topics", "create", "--config", str(config), "--partitions", "2").returncode == 0
    clash = _run("topics", "create", "--config", str(config), "--partitions", "4")
    assert clash.returncode == 1
    assert f"{app_id}-features: mismatch: has 2 partitions, expected 4" in clash.stderr
    assert "Traceback" not in clash.stderr
    features = kafka_admin.list_topics(timeout=10).topics[f"{app_id}-features"]
    assert len(features.partitions) == 2  # never repartitioned


def test_unreachable_broker_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    config = _config(tmp_path, "nowhere")
    started = time.monotonic()
    result = _run("topics", "create", "--config", str(config), "--timeout", "3", timeout=30)
    assert result.returncode == 2
    assert "cannot reach the broker" in result.stderr and "127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 20


def test_missing_config_and_bad_flags_are_usage_errors(tmp_path: Path) -> None:
    missing = _run("topics", "create", "--config", "/nonexistent/driftwire.yaml")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    config = _config(tmp_path, "x")
    bad = _run("topics", "create", "--config", str(config), "--retention", "soon")
    assert bad.returncode == 2 and "--retention" in bad.stderr
    no_topics = tmp_path / "engine-only.yaml"
    no_topics.write_text("models: [{id: m}]\n")
    result = _run("topics", "create", "--config", str(no_topics))
    assert result.returncode == 2 and "topics.features is required" in result.stderr
    assert "Traceback" not in missing.stderr + bad.stderr + result.stderr
