"""`driftwire validate-config`: help, a valid file, every problem of a bad one, usage errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from driftwire.streams.cli_config import streams_problems

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "driftwire.yaml"

VALID = """
kafka:
  bootstrap_servers: k1:9092
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: driftwire
  sasl_password: hunter2
topics:
  features: shop-features
  outcomes: {name: shop-outcomes, format: json}
  alerts: shop-alerts
worker: {app_id: shop}
models:
  - id: fraud
    numeric: [amount]
    categorical: [channel]
"""

# one problem in each section, so a test can check none hides another
BROKEN = """
kafka:
  bootstrap_servers: k1:9092
  security_protocol: SASL_SSL
  sasl_password: hunter2
topics:
  features: {name: f, format: protobuf}
worker: {batch_size: 0}
models:
  - id: fraud
    window: {size: 10x}
    drift: {correction: holm}
"""


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "driftwire.streams.cli", *args]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWIRE_")}
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env={**clean, **(env or {})}
    )


def test_help_names_the_argument() -> None:
    result = _run("validate-config", "--help")
    assert result.returncode == 0
    assert "FILE" in result.stdout.upper() and "problem" in result.stdout


def test_valid_file_summarises_models_and_topics_without_secrets(tmp_path: Path) -> None:
    path = tmp_path / "driftwire.yaml"
    path.write_text(VALID)
    result = _run("validate-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    for shown in ("valid", "fraud", "shop-features", "shop-outcomes", "shop-references", "SASL"):
        assert shown in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


def test_the_shipped_example_is_valid() -> None:
    result = _run("validate-config", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fraud-scorer" in result.stdout


def test_broken_file_lists_every_problem_with_its_field(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = _run("validate-config", str(path))
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if line.startswith(str(path))]
    fields = (
        "models[0].window.size",
        "models[0].drift.correction",
        "worker.batch_size",
        "kafka: security_protocol SASL_SSL needs sasl_mechanism",
        "topics.alerts is required",
        "topics.features",
    )
    for field in fields:
        assert any(field in line for line in lines), (field, result.stdout)
    assert lines[-1].endswith(f"{len(fields)} problem(s)")
    assert "hunter2" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_environment_is_applied_like_a_worker_sees_it(tmp_path: Path) -> None:
    path = tmp_path / "driftwire.yaml"
    path.write_text(VALID)
    result = _run("validate-config", str(path), env={"DRIFTWIRE_SECURITY_PROTOCOL": "TLS"})
    assert result.returncode == 1
    assert "security_protocol 'TLS'" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [("models: [\n", "invalid YAML"), ("- just\n- a list\n", "expected a mapping")],
)
def test_unparseable_files_are_problems_not_tracebacks(tmp_path: Path, text, expected) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = _run("validate-config", str(path))
    assert result.returncode == 1
    assert expected in result.stdout
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_usage_error() -> None:
    result = _run("validate-config", "/nonexistent/driftwire.yaml")
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_streams_problems_reports_each_section_once() -> None:
    raw = {
        "kafka": {"bogus": 1},
        "topics": {"features": "f", "alerts": "a", "extra": "x"},
        "worker": {"app_id": "no spaces allowed"},
        "backtest": {"source": "tape"},
    }
    problems = streams_problems(raw, env={}, base_dir=Path("."))
    assert [p.split(":")[0].split(".")[0].split(" ")[0] for p in problems] == [
        "worker",
        "backtest",
        "kafka",
        "topics",
    ]
    assert streams_problems({"topics": {"features": "f", "alerts": "a"}}, {}, Path(".")) == []


def test_missing_reference_file_is_a_warning_found_beside_the_config(tmp_path: Path) -> None:
    text = VALID.replace(
        "    categorical: [channel]\n",
        "    categorical: [channel]\n    reference: {source: file, path: ref.parquet}\n",
    )
    path = tmp_path / "driftwire.yaml"
    path.write_text(text)
    absent = _run("validate-config", str(path))
    assert absent.returncode == 0
    assert "warning: models[0].reference.path: no file 'ref.parquet'" in absent.stdout
    (tmp_path / "ref.parquet").write_bytes(b"")
    present = _run("validate-config", str(path))
    assert present.returncode == 0 and "warning" not in present.stdout
