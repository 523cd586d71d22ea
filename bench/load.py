"""Load: one worker fed at twice its sustainable rate, then left to drain.

    python bench/load.py                       # the full run: 10 minutes at 2x
    python bench/load.py --seconds 30          # a short run (the test suite runs ~30 s)
    python bench/load.py --bootstrap HOST:PORT --rate 20000

1. Sustainable rate: a fresh 4-partition topic is filled with a backlog (default
   100,000 FeatureEvents, 20 numeric + 5 categorical features, bench/e2e.py's
   records) and one `driftwire worker` process drains it; events / wall second from
   its first consumed message to the last profiled event.
2. Overload: a producer thread sends at twice that rate (event time = wall time) for
   ``--seconds``, bounded by ``--max-events``, to another fresh topic, while a second
   worker consumes it. Every 0.5 s: lag (messages acknowledged by the broker minus
   messages the worker consumed) and the worker's resident memory.
3. Drain: after the producer stops, the time until the worker consumed every message.

Prints: produced vs consumed vs accounted for (profiled + late + dead-lettered), peak
RSS (the kernel's VmHWM of the worker process), max lag, drain time. Figures are
printed, never asserted here; tests/test_faults_load.py asserts the invariants (no
message skipped, lag drains, memory bounded) on a short run. Loopback only: without
--bootstrap, a LocalBroker is started in a temp dir and stopped at the end.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).parent))
from e2e import PARTITIONS, WorkerProcess, encode, make_records, send, write_config

log = logging.getLogger("bench.load")
CHUNK_S = 0.1  # the producer paces itself in slices of this many seconds
POOL = 20_000  # distinct feature rows the producer cycles through


@dataclass
class LoadReport:
    sustainable_rate: float  # events/s one worker drains a backlog at
    target_rate: float  # what the producer aimed at (2x)
    produced: int  # acknowledged by the broker
    consumed: int  # counted in by the worker (driftwire_events_in_total)
    accounted: int  # profiled + late + dead-lettered
    produce_seconds: float
    produce_rate: float  # what the producer achieved (acked / produce_seconds)
    max_lag: int
    drain_seconds: float  # producer stopped -> worker consumed everything
    peak_rss_mb: float
    rss_samples_mb: list[float]

    def lines(self) -> list[str]:
        return [
            f"sustainable rate (backlog drain, 1 worker): {self.sustainable_rate:,.0f} events/s",
            f"producer: target {self.target_rate:,.0f} events/s, achieved "
            f"{self.produce_rate:,.0f} events/s for {self.produce_seconds:.0f} s",
            f"produced (acked): {self.produced:,}  consumed: {self.consumed:,}  "
            f"accounted for (profiled + late + DLQ): {self.accounted:,}",
            f"max lag: {self.max_lag:,} messages; drained in {self.drain_seconds:.1f} s "
            "after the producer stopped",
            f"worker peak RSS (VmHWM): {self.peak_rss_mb:.0f} MB; RSS at 25/50/75/100% of the "
            f"run: {', '.join(f'{m:.0f}' for m in _quartiles(self.rss_samples_mb))} MB",
        ]


def _quartiles(samples: list[float]) -> list[float]:
    if not samples:
        return []
    n = len(samples)
    return [samples[min(n - 1, int(n * q))] for q in (0.25, 0.5, 0.75, 1.0)]


def _topic(bootstrap: str, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(30)
    return name


def _produce(producer: Producer, topic: str, values: list[bytes], keys: list[bytes]) -> None:
    send(producer, topic, values, keys)
    producer.poll(0)


def _memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _counted(worker: WorkerProcess, topic: str) -> tuple[int, int]:
    """(consumed, accounted for) of `topic` by the worker's own metrics."""
    label = f'{{topic="{topic}"}}'
    consumed = worker.metric(f"driftwire_events_in_total{label}")
    accounted = (
        worker.metric(f"driftwire_events_profiled_total{label}")
        + worker.metric(f"driftwire_events_late_total{label}")
        + worker.metric("driftwire_events_dead_lettered_total")
    )
    return int(consumed), int(accounted)


def sustainable_rate(bootstrap: str, workdir: Path, n: int) -> float:
    """Events per wall second one worker drains a backlog of `n` events at."""
    topic, app_id = _topic(bootstrap, "load-cal"), f"cal{uuid.uuid4().hex[:6]}"
    rng = np.random.default_rng(1)
    times = int(time.time() * 1000) + np.arange(n, dtype=np.int64) // 10
    records = make_records(rng, times, np.zeros(n))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    _produce(producer, topic, encode(records), [r["prediction_id"].encode() for r in records])
    producer.flush(60)
    worker = WorkerProcess(write_config(workdir, bootstrap, topic, app_id), workdir / "cal.log")
    try:
        while _counted(worker, topic)[0] == 0:
            time.sleep(0.02)
        started = time.perf_counter()
        while _counted(worker, topic)[0] < n:
            time.sleep(0.1)
        return n / (time.perf_counter() - started)
    finally:
        worker.stop()


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _avro_head(model_id: str, version: str, prediction_id: str, event_time: int) -> bytes:
    """The first four FeatureEvent fields in Avro binary (strings, then a long)."""
    parts = [s.encode() for s in (model_id, version, prediction_id)]
    return b"".join(_zigzag(len(p)) + p for p in parts) + _zigzag(event_time)


class FastEvents:
    """FeatureEvent bytes with fresh ids and event times at ~1 us each.

    fastavro encodes a pool of rows once; each message is a hand-written head (ids and
    event time, the first fields of the schema) + a pooled tail (features, prediction),
    so a Python producer can outrun the worker on the same two cores.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        records = make_records(rng, np.zeros(POOL, np.int64), np.zeros(POOL))
        self.tails = []
        for rec, full in zip(records, encode(records), strict=True):
            head = _avro_head(rec["model_id"], rec["model_version"], rec["prediction_id"], 0)
            assert full.startswith(head), "FeatureEvent no longer starts with the id fields"
            self.tails.append(full[len(head) :])
        self.model_id = records[0]["model_id"]
        self.sent = 0

    def take(self, n: int, event_time: int) -> tuple[list[bytes], list[bytes]]:
        keys, values = [], []
        for i in range(self.sent, self.sent + n):
            pid = f"p{i}"
            keys.append(pid.encode())
            head = _avro_head(self.model_id, "1", pid, event_time)
            values.append(head + self.tails[i % POOL])
        self.sent += n
        return keys, values


class PacedProducer(threading.Thread):
    """Sends `rate` events/s (event time = wall time) for `seconds`, at most `limit`."""

    def __init__(self, bootstrap: str, topic: str, rate: float, seconds: float, limit: int):
        super().__init__(daemon=True)
        self.topic, self.rate, self.seconds, self.limit = topic, rate, seconds, limit
        self.acked = 0
        self.failed = 0
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 20,
                "on_delivery": self._done,
                "queue.buffering.max.messages": 1_000_000,
            }
        )

    def _done(self, err, msg) -> None:
        if err is None:
            self.acked += 1
        else:
            self.failed += 1

    def run(self) -> None:
        events = FastEvents(np.random.default_rng(2))
        start, sent = time.monotonic(), 0
        while sent < self.limit and (elapsed := time.monotonic() - start) < self.seconds:
            due = min(self.limit, int((elapsed + CHUNK_S) * self.rate)) - sent
            if due > 0:
                keys, values = events.take(due, int(time.time() * 1000))
                _produce(self.producer, self.topic, values, keys)
                sent += due
            time.sleep(max(0.0, start + (sent / self.rate) - time.monotonic()))
        self.producer.flush(120)


def run_load(
    bootstrap: str,
    workdir: Path,
    seconds: float,
    rate: float | None = None,
    calibration_events: int = 100_000,
    max_events: int = 50_000_000,
    drain_timeout: float | None = None,
) -> LoadReport:
    base = rate or sustainable_rate(bootstrap, workdir, calibration_events)
    target = 2 * base
    topic, app_id = _topic(bootstrap, "load"), f"load{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(write_config(workdir, bootstrap, topic, app_id), workdir / "load.log")
    producer = PacedProducer(bootstrap, topic, target, seconds, max_events)
    max_lag, rss = 0, []
    try:
        producer.start()
        started = time.monotonic()
        while producer.is_alive():
            max_lag = max(max_lag, producer.acked - _counted(worker, topic)[0])
            rss.append(_memory_kb(worker.proc.pid, "VmRSS") / 1024)
            time.sleep(0.5)
        produced, stopped = producer.acked, time.monotonic()
        produce_seconds = stopped - started
        deadline = stopped + (drain_timeout or max(120.0, 4 * seconds))
        while _counted(worker, topic)[0] < produced and time.monotonic() < deadline:
            rss.append(_memory_kb(worker.proc.pid, "VmRSS") / 1024)
            time.sleep(0.5)
        drain = time.monotonic() - stopped
        time.sleep(1.0)  # the last batch's counters
        consumed, accounted = _counted(worker, topic)
        peak = _memory_kb(worker.proc.pid, "VmHWM") / 1024
    finally:
        worker.stop()
    if producer.failed:
        log.warning("%d messages were not acknowledged by the broker", producer.failed)
    return LoadReport(
        base,
        target,
        produced,
        consumed,
        accounted,
        produce_seconds,
        produced / produce_seconds,
        max_lag,
        drain,
        peak,
        rss,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", help="a running broker (default: start a LocalBroker)")
    parser.add_argument("--seconds", type=float, default=600.0, help="overload duration")
    parser.add_argument("--rate", type=float, help="sustainable rate, skips the calibration")
    parser.add_argument("--calibration-events", type=int, default=100_000)
    parser.add_argument("--max-events", type=int, default=50_000_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="driftwire-load-") as tmp:
        workdir = Path(tmp)
        broker = None
        bootstrap = args.bootstrap
        if not bootstrap:
            from driftwire.streams.broker import LocalBroker

            broker = LocalBroker(workdir / "broker")
            bootstrap = broker.start(timeout=120)
        try:
            report = run_load(
                bootstrap,
                workdir,
                args.seconds,
                args.rate,
                args.calibration_events,
                args.max_events,
            )
        finally:
            if broker is not None:
                broker.stop()
    for line in report.lines():
        print(line)


if __name__ == "__main__":
    main()
