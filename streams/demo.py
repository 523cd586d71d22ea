"""`driftwire demo`: a local broker, a worker, a retail stream with three incidents, live alerts.

The demo runs the real product end to end: an Apache Kafka broker started from the
official jars (unless ``--bootstrap`` names one), topics created with the admin
client, a `driftwire worker` subprocess, and a producer writing Avro `FeatureEvent`
and `OutcomeEvent` messages. Event time runs `speedup` times faster than the wall
clock so that windows close every few seconds. Three incidents are announced and
injected; the alerts topic is read live, and the summary says which incident was
caught and whether the stationary control model stayed quiet.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from driftwire.detectors.alerts import Alert
from driftwire.schemas.serde import Codec
from driftwire.streams.admin import TopicSpec, ensure_topics
from driftwire.streams.alerts_reader import QUIET_CLIENT_LOG, AlertsReader, StartAt
from driftwire.streams.broker import LocalBroker
from driftwire.streams.simulator import MODELS, Incident, RetailSimulator

log = logging.getLogger(__name__)

CONTROL_MODEL = "churn-predictor"
REFERENCE_EVENTS = 20_000


@dataclass(frozen=True)
class DemoSettings:
    """How long and how fast the demo runs; every default fits in about two minutes."""

    workdir: Path
    duration_s: float = 120.0
    speedup: float = 10.0  # event-time seconds per wall-clock second
    rate: int = 400  # events per wall-clock second, per model
    window: str = "30s"  # event-time window size
    seed: int = 7
    bootstrap: str | None = None  # use this broker instead of starting one
    partitions: int = 4


@dataclass
class IncidentResult:
    incident: Incident
    announced_at_s: float
    alerts: list[Alert] = field(default_factory=list)

    @property
    def caught(self) -> bool:
        return bool(self.alerts)


@dataclass
class DemoResult:
    incidents: list[IncidentResult]
    alerts: list[Alert]
    control_alerts: list[Alert]
    events_produced: int
    outcomes_produced: int

    @property
    def ok(self) -> bool:
        return all(r.caught for r in self.incidents) and not self.control_alerts


def plan_incidents(start_ms: int, settings: DemoSettings) -> tuple[Incident, ...]:
    """Three incidents at fixed shares of the run, so a short demo still shows all three."""

    def at(share: float) -> int:
        return start_ms + int(share * settings.duration_s * settings.speedup * 1000)

    return (
        Incident(
            "price tier change",
            "recommender",
            "data_drift",
            "price",
            at(0.2),
            description="prices x1.6 and fewer discounts: the inputs drift",
        ),
        Incident(
            "broken upstream join",
            "fraud-scorer",
            "data_quality",
            "account_age_days",
            at(0.35),
            at(0.6),
            description="40% of account ages go missing",
        ),
        Incident(
            "fraudsters adapt",
            "fraud-scorer",
            "concept_drift",
            None,
            at(0.4),
            description="on the app channel 35% of the model's calls turn wrong; inputs unchanged",
        ),
    )


def write_config(settings: DemoSettings, bootstrap: str, sim: RetailSimulator) -> Path:
    """Reference Parquet files from a stationary stretch, and the worker's YAML config."""
    models = []
    for model_id in MODELS:
        t = np.arange(REFERENCE_EVENTS, dtype=np.int64)  # event time 0..: before any incident
        cols = sim.features(model_id, t)
        path = settings.workdir / f"reference-{model_id}.parquet"
        pq.write_table(pa.table(cols.flat()), path)
        model = {
            "id": model_id,
            "numeric": list(cols.numeric),
            "categorical": list(cols.categorical),
            "window": {"size": settings.window, "min_count": 300},
            "reference": {"source": "file", "path": str(path)},
            "alerts": {"fire_after": 1, "resolve_after": 3},
        }
        if cols.truth is not None:
            model["concept"] = {
                "task": "binary",
                "label_horizon_ms": 70_000,
                "label_ttl_ms": 120_000,
                "min_labels": 200,
            }
        models.append(model)
    config = {
        "kafka": {"bootstrap_servers": bootstrap, "client_id": "driftwire-demo"},
        "topics": {
            "features": {"name": "demo-features", "partitions": settings.partitions},
            "outcomes": {"name": "demo-outcomes", "partitions": settings.partitions},
            "alerts": "demo-alerts",
            "dead_letter": "demo-dead-letter",
        },
        "worker": {"app_id": "driftwire-demo", "idle_timeout": "5s", "batch_timeout": "200ms"},
        "models": models,
    }
    path = settings.workdir / "driftwire-demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class TrafficProducer(threading.Thread):
    """Produces every model's events for the event time that has passed, then due labels."""

    def __init__(
        self, producer: Producer, sim: RetailSimulator, settings: DemoSettings, start_ms: int
    ) -> None:
        super().__init__(name="demo-producer", daemon=True)
        self.producer = producer
        self.sim = sim
        self.settings = settings
        self.start_ms = start_ms
        self.stop_event = threading.Event()
        self.features_codec = Codec("FeatureEvent", "avro")
        self.outcomes_codec = Codec("OutcomeEvent", "avro")
        self.pending_due = np.empty(0, dtype=np.int64)
        self.pending: list[dict] = []
        self.events = 0
        self.outcomes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the demo, never swallowed
            self.error = exc
            log.exception("demo producer failed")

    def _loop(self) -> None:
        began, clock_ms = time.monotonic(), self.start_ms
        per_ms = self.settings.rate / (1000.0 * self.settings.speedup)
        while not self.stop_event.is_set():
            now_ms = self.start_ms + int((time.monotonic() - began) * self.settings.speedup * 1000)
            n = int((now_ms - clock_ms) * per_ms)
            if n > 0:
                times = np.sort(self.sim.rng_.integers(clock_ms, now_ms, n))
                for model_id in MODELS:
                    self._produce_features(model_id, times)
                self._produce_due(now_ms)
                clock_ms = now_ms
                self.producer.poll(0)
            self.stop_event.wait(0.1)
        self.producer.flush(10)

    def _produce_features(self, model_id: str, times: np.ndarray) -> None:
        cols = self.sim.features(model_id, times)
        for record in cols.records():
            value = self.features_codec.encode(record)
            self.producer.produce("demo-features", value, key=record["prediction_id"].encode())
        self.events += len(times)
        due, outcomes = self.sim.outcomes(cols)
        self.pending_due = np.concatenate([self.pending_due, due])
        self.pending.extend(outcomes)

    def _produce_due(self, now_ms: int) -> None:
        ready = np.flatnonzero(self.pending_due <= now_ms)
        for i in ready.tolist():
            record = self.pending[i]
            value = self.outcomes_codec.encode(record)
            self.producer.produce("demo-outcomes", value, key=record["prediction_id"].encode())
        keep = np.flatnonzero(self.pending_due > now_ms)
        self.pending = [self.pending[i] for i in keep.tolist()]
        self.pending_due = self.pending_due[keep]
        self.outcomes += len(ready)


def _start_worker(config: Path, log_file: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "driftwire.streams.cli", "worker", "--config", str(config)]
    out = log_file.open("ab")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _create_topics(bootstrap: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": QUIET_CLIENT_LOG})
    ensure_topics(
        admin,
        [
            TopicSpec("demo-features", partitions),
            TopicSpec("demo-outcomes", partitions),
            TopicSpec("demo-alerts", 1),
            TopicSpec("demo-dead-letter", 1),
        ],
    )


def match_incidents(
    incidents: tuple[Incident, ...], alerts: list[Alert], announced: dict[str, float]
) -> list[IncidentResult]:
    """An incident is caught by a firing alert of its kind on its model, for a window that
    ends after it started (and, for a feature incident, on that feature)."""
    results = []
    for inc in incidents:
        hits = [
            a
            for a in alerts
            if a.status.value == "firing"
            and a.model_id == inc.model_id
            and a.kind.value == inc.kind
            and a.window_end > inc.start_ms
            and (inc.feature is None or a.feature == inc.feature)
        ]
        results.append(IncidentResult(inc, announced.get(inc.name, 0.0), hits))
    return results


def run_demo(
    settings: DemoSettings,
    on_alert: Callable[[Alert], None],
    on_incident: Callable[[Incident, float], None],
    on_status: Callable[[str], None],
) -> DemoResult:
    """Run the whole demo; every process and thread it starts is stopped before it returns."""
    settings.workdir.mkdir(parents=True, exist_ok=True)
    # Event time runs `speedup` times faster than the clock; starting that far in the past makes
    # the stream end near "now", never in the future (the worker drops far-future events).
    span_ms = int(settings.duration_s * settings.speedup * 1000)
    start_ms = ((int(time.time() * 1000) - span_ms) // 60_000) * 60_000
    sim = RetailSimulator(seed=settings.seed)
    with ExitStack() as stack:
        bootstrap = settings.bootstrap
        if bootstrap is None:
            on_status("starting Apache Kafka (KRaft, single node) from the official jars ...")
            broker = LocalBroker(settings.workdir / "broker")
            bootstrap = broker.start()
            stack.callback(broker.stop)
        on_status(f"broker at {bootstrap}; creating topics")
        _create_topics(bootstrap, settings.partitions)
        config = write_config(settings, bootstrap, sim)
        sim.incidents = plan_incidents(start_ms, settings)
        on_status(f"starting a worker (config {config}, log {settings.workdir / 'worker.log'})")
        worker = _start_worker(config, settings.workdir / "worker.log")
        stack.callback(_stop_worker, worker)
        producer = Producer(
            {"bootstrap.servers": bootstrap, "linger.ms": 20, "logger": QUIET_CLIENT_LOG}
        )
        traffic = TrafficProducer(producer, sim, settings, start_ms)
        reader = AlertsReader(
            {"bootstrap.servers": bootstrap, "logger": QUIET_CLIENT_LOG},
            "demo-alerts",
            Codec("DriftAlert", "avro"),
            StartAt("beginning"),
        )
        stack.callback(reader.close)
        traffic.start()
        stack.callback(_join, traffic)
        alerts, announced = _watch(settings, sim, reader, worker, traffic, on_alert, on_incident)
        if traffic.error is not None:
            raise RuntimeError(f"demo producer failed: {traffic.error}")
    results = match_incidents(sim.incidents, alerts, announced)
    control = [a for a in alerts if a.model_id == CONTROL_MODEL]
    return DemoResult(results, alerts, control, traffic.events, traffic.outcomes)


def _join(traffic: TrafficProducer) -> None:
    traffic.stop_event.set()
    traffic.join(30)


def _watch(
    settings: DemoSettings,
    sim: RetailSimulator,
    reader: AlertsReader,
    worker: subprocess.Popen,
    traffic: TrafficProducer,
    on_alert: Callable[[Alert], None],
    on_incident: Callable[[Incident, float], None],
) -> tuple[list[Alert], dict[str, float]]:
    began = time.monotonic()
    deadline = began + settings.duration_s
    alerts: list[Alert] = []
    announced: dict[str, float] = {}
    start_ms = traffic.start_ms
    while time.monotonic() < deadline:
        elapsed = time.monotonic() - began
        clock_ms = start_ms + elapsed * settings.speedup * 1000
        for inc in sim.incidents:
            if inc.name not in announced and clock_ms >= inc.start_ms:
                announced[inc.name] = elapsed
                on_incident(inc, elapsed)
        if worker.poll() is not None:
            raise RuntimeError(
                f"the worker exited with code {worker.returncode}; "
                f"see {settings.workdir / 'worker.log'}"
            )
        if traffic.error is not None:
            break
        for alert in reader.read(follow=True, until=min(deadline, time.monotonic() + 0.5)):
            alerts.append(alert)
            on_alert(alert)
    return alerts, announced


def default_workdir() -> Path:
    root = Path(os.environ.get("DRIFTWIRE_HOME", Path.home() / ".cache" / "driftwire"))
    return root / "demo" / time.strftime("%Y%m%d-%H%M%S")
