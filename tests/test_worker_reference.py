"""Stored reference profiles in the worker: ``reference.source: topic`` (the latest profile
of the model on the compacted references topic, published by ``driftwire reference build
--publish``) gives the same alerts as ``source: profile`` with the same profile from a file."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from driftwire.detectors.alerts import Alert
from driftwire.detectors.generators import Shift, StreamSpec, generate, take_events
from driftwire.streams.cli import app
from typer.testing import CliRunner

from tests.test_worker_signals import KEEP, T0, produce, records_of, wait_quiet
from tests.workerkit import read_alerts, start_worker, stop

pytestmark = pytest.mark.kafka

WINDOW_MS = 10_000
SHIFT_AT = T0 + 40_000


def run_worker(
    bootstrap: str, features: str, references: str, reference: dict, tmp_path: Path
) -> list[Alert]:
    app_id = f"ref{uuid.uuid4().hex[:8]}"
    config = {
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": {"features": features, "alerts": f"{app_id}-alerts", "references": references},
        "worker": {"app_id": app_id, "idle_timeout": "10m", "batch_timeout": "100ms"},
        "models": [
            {
                "id": "m",
                "window": {"size": WINDOW_MS, "min_count": 200},
                "alerts": {"fire_after": 1, "resolve_after": 2},
                "reference": reference,
            }
        ],
    }
    cfg = tmp_path / f"{app_id}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    worker = start_worker(cfg, tmp_path / f"{app_id}.log")

    def drifted(alerts: list[Alert]) -> bool:
        return any(a.kind.value == "data_drift" and a.status.value == "firing" for a in alerts)

    try:
        alerts = wait_quiet(lambda: read_alerts(bootstrap, f"{app_id}-alerts"), drifted)
        assert worker.proc.poll() is None, (tmp_path / f"{app_id}.log").read_text()[-3000:]
    finally:
        stop(worker)
    return alerts


def test_reference_from_topic_equals_reference_from_profile_file(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    features = make_topic(partitions=2, config=KEEP)
    references = make_topic(partitions=1, config={"cleanup.policy": "compact"})
    rng = np.random.default_rng(2)
    spec = StreamSpec(n_numeric=4, n_categorical=1, rate=100.0, seed=8, model_id="m")
    ref = take_events(spec, 6_000)
    ref_lines = records_of(ref, ref.prediction_id.astype(str), np.full(len(ref), 10.0), "v1")
    events = tmp_path / "ref.jsonl"
    events.write_text("".join(json.dumps(r) + "\n" for r in ref_lines))
    drift = [Shift(features=("x1",), start_ms=SHIFT_AT, magnitude=1.0)]
    batch = next(iter(generate(spec, 90_000, drifts=drift, start_ms=T0, batch_size=10**7)))
    pids = np.array([f"p-{p}" for p in batch.prediction_id], dtype=object)
    produce(kafka_bootstrap, features, records_of(batch, pids, rng.random(len(batch)), "v1"))

    # build once from the events file: to a profile file and onto the references topic
    built = tmp_path / "m.profile"
    cfg = tmp_path / "build.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": kafka_bootstrap},
                "topics": {
                    "features": features,
                    "alerts": "unused",
                    "references": references,
                },
                "models": [{"id": "m", "window": {"size": WINDOW_MS, "min_count": 200}}],
            }
        )
    )
    run = CliRunner().invoke(
        app,
        ["reference", "build", "--config", str(cfg), "--model", "m", "--from-file", str(events),
         "--out", str(built), "--publish"],
    )  # fmt: skip
    assert run.exit_code == 0, run.output

    from_topic = run_worker(kafka_bootstrap, features, references, {"source": "topic"}, tmp_path)
    in_file = {"source": "profile", "path": str(built)}
    from_file = run_worker(kafka_bootstrap, features, references, in_file, tmp_path)
    drift_at = {
        a.window_start for a in from_topic if a.feature == "x1" and a.status.value == "firing"
    }
    assert drift_at and min(drift_at) >= SHIFT_AT - WINDOW_MS  # the scenario is real
    assert sorted(a.alert_id for a in from_topic) == sorted(a.alert_id for a in from_file)
