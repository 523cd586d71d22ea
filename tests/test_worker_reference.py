"""Stored reference profiles in the worker: ``reference.source: topic`` (the latest profile
of the model on the compacted references topic, published by ``driftwire reference build
--publish``) gives the same alerts as ``source: profile`` with the same profile from a file."""

from __future__ import annotations

import json
import time
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


# -- a new reference published while the worker runs --------------------------------------

SWITCH_AT = T0 + 90_000


def _publish(cli_cfg: Path, events: Path, effective_ms: int | None = None) -> str:
    args = ["reference", "build", "--config", str(cli_cfg), "--model", "m"]
    args += ["--from-file", str(events), "--publish", "--out", str(events.with_suffix(".ref"))]
    if effective_ms is not None:
        args += ["--effective-from", str(effective_ms)]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    return run.output


def _events_file(path: Path, batch) -> Path:
    lines = records_of(batch, batch.prediction_id.astype(str), np.full(len(batch), 10.0), "v1")
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_a_reference_published_while_running_switches_at_its_window(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    """Drift fires against reference A; B (learned from the drifted data) is published with an
    effective time in the stream's future; the worker schedules it while running, switches at
    that window (a lifecycle alert) and the drift resolves; a restart in between changes no
    alert id."""
    from driftwire.detectors.config import parse_config
    from driftwire.detectors.monitor import Monitor
    from driftwire.detectors.reference import ReferenceProfile

    features = make_topic(partitions=2, config=KEEP)
    references = make_topic(partitions=1, config={"cleanup.policy": "compact"})
    spec = StreamSpec(n_numeric=4, n_categorical=1, rate=100.0, seed=9, model_id="m")
    model = {
        "id": "m",
        "window": {"size": WINDOW_MS, "min_count": 200},
        "alerts": {"fire_after": 1, "resolve_after": 2},
    }
    app_id = f"refsw{uuid.uuid4().hex[:6]}"
    alerts_topic = f"{app_id}-alerts"
    kafka = {"bootstrap_servers": kafka_bootstrap}
    topics = {"features": features, "alerts": alerts_topic, "references": references}
    cli_cfg = tmp_path / "cli.yaml"
    cli_cfg.write_text(yaml.safe_dump({"kafka": kafka, "topics": topics, "models": [model]}))
    worker_cfg = tmp_path / "worker.yaml"
    worker_cfg.write_text(
        yaml.safe_dump(
            {
                "kafka": kafka,
                "topics": topics,
                "worker": {"app_id": app_id, "idle_timeout": "10m", "batch_timeout": "100ms"},
                "models": [{**model, "reference": {"source": "topic"}}],
            }
        )
    )
    ref_a = take_events(spec, 6_000)
    ref_b = next(iter(generate(spec, 60_000, drifts=[Shift(("x1",), 0, 1.0)], batch_size=10**7)))
    drift = [Shift(features=("x1",), start_ms=SHIFT_AT, magnitude=1.0)]
    stream = next(iter(generate(spec, 150_000, drifts=drift, start_ms=T0, batch_size=10**7)))
    pids = np.array([f"p-{p}" for p in stream.prediction_id], dtype=object)
    records = records_of(stream, pids, np.full(len(stream), 10.0), "v1")
    times = stream.event_time
    parts = [times < T0 + 80_000, times >= T0 + 80_000]

    def part(i: int) -> list[dict]:
        return [records[j] for j in np.flatnonzero(parts[i])]

    def read() -> list[Alert]:
        return read_alerts(kafka_bootstrap, alerts_topic)

    def has(kind: str, status: str, start: int) -> Callable[[list[Alert]], bool]:
        return lambda alerts: any(
            (a.kind.value, a.status.value, a.window_start) == (kind, status, start) for a in alerts
        )

    _publish(cli_cfg, _events_file(tmp_path / "a.jsonl", ref_a))
    log = tmp_path / "worker.log"
    worker = start_worker(worker_cfg, log)
    try:
        produce(kafka_bootstrap, features, part(0))
        wait_quiet(read, has("data_drift", "firing", SHIFT_AT))
        out = _publish(cli_cfg, _events_file(tmp_path / "b.jsonl", ref_b), SWITCH_AT - 6_500)
        assert "switch at the first window boundary" in out
        metric = 'driftwire_reference_changes_total{model="m"}'
        deadline = time.monotonic() + 30
        while worker.metrics().get(metric, 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert worker.metrics().get(metric) == 1, log.read_text()[-3000:]
        # restart between learning of B and its switch time: the restarted worker must keep
        # profiling 80-90 s against A although the topic's latest profile is B
        assert stop(worker) == 0
        worker = start_worker(worker_cfg, log)
        produce(kafka_bootstrap, features, part(1))
        alerts = wait_quiet(read, has("data_drift", "resolved", SWITCH_AT + WINDOW_MS))
        assert worker.proc.poll() is None, log.read_text()[-3000:]
    finally:
        stop(worker)

    cfg = parse_config({"models": [model]}).model("m")
    old = ReferenceProfile.from_file(tmp_path / "a.jsonl", cfg)
    new = ReferenceProfile.from_file(tmp_path / "b.jsonl", cfg)
    monitor = Monitor(cfg, old)
    monitor.rebase(new, SWITCH_AT)
    expected = monitor.update_features(stream) + monitor.advance(T0 + 140_000)
    got = [a for a in alerts if a.window_end <= T0 + 140_000]
    assert sorted(a.alert_id for a in got) == sorted(a.alert_id for a in expected)
    (switch,) = [a for a in alerts if a.kind.value == "lifecycle"]
    assert (switch.feature, switch.reference_id) == (new.reference_id, new.reference_id)
    x1 = [
        (a.status.value, a.window_start) for a in alerts if (a.feature, a.detector) == ("x1", "ks")
    ]
    assert x1 == [("firing", SHIFT_AT), ("resolved", SWITCH_AT + WINDOW_MS)]
    text = log.read_text()
    assert "profiled against reference" not in text and "arrived after events" not in text

    # a backtest of the same topic with the same change gives the same alerts
    replay_cfg = tmp_path / "replay.yaml"
    replay_model = {**model, "reference": {"source": "profile", "path": str(tmp_path / "a.ref")}}
    replay_cfg.write_text(
        yaml.safe_dump(
            {
                "kafka": kafka,
                "topics": topics,
                "models": [replay_model],
                "backtest": {"source": "topic", "start": 0},
            }
        )
    )
    change = f"{SWITCH_AT - 6_500}={tmp_path / 'b.ref'}"
    out = tmp_path / "replay.json"
    run = CliRunner().invoke(app, ["backtest", "--config", str(replay_cfg), "--no-progress",
                                   "--json", str(out), "--reference-change", change])  # fmt: skip
    assert run.exit_code == 0, run.output
    replayed = [a for a in json.loads(out.read_text())["alerts"] if a["window_end"] <= T0 + 140_000]
    assert sorted(a["alert_id"] for a in replayed) == sorted(a.alert_id for a in got)
