"""End-to-end worker throughput and alert latency against a real broker.

    python bench/e2e.py --bootstrap 127.0.0.1:9092 -n 200000

1. Produces N FeatureEvents (schemaless Avro, 20 numeric + 5 categorical features) to a
   fresh 4-partition topic, then starts one `driftwire worker` process on the backlog
   and times it from its first consumed message to the last profiled event: end-to-end
   events/s of one worker process.
2. In the same run, reads the same messages back and decodes them with bare fastavro,
   one `schemaless_reader` call per message: the practical single-core ceiling; and with
   the serde's `Codec.decode_many` (validation included), what the worker pays.
3. Live phase: produces events paced in real time (event time = wall time) with a drift
   switched on and off every other window, and measures, for every alert, the time from
   its window's end (+ allowed lateness) to the alert's timestamp on the alerts topic.

Figures are printed, never asserted. Without --bootstrap, a LocalBroker is started.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import fastavro
import numpy as np
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from driftwire.schemas.serde import Codec, load_schema

N_NUMERIC, N_CATEGORICAL, PARTITIONS = 20, 5, 4
WINDOW_MS, LATENESS_MS = 2_000, 500


def make_records(rng: np.random.Generator, times: np.ndarray, shifted: np.ndarray) -> list[dict]:
    values = rng.standard_normal((len(times), N_NUMERIC))
    values[:, 0] += 2.0 * shifted  # the live phase's on/off drift on x0
    cats = rng.integers(0, 6, (len(times), N_CATEGORICAL))
    score = 1 / (1 + np.exp(-values[:, :3].sum(axis=1)))
    return [
        {
            "model_id": "bench",
            "model_version": "1",
            "prediction_id": uuid.uuid4().hex,
            "event_time": int(t),
            "numeric": {f"x{j}": float(v) for j, v in enumerate(row)},
            "categorical": {f"c{j}": f"v{c}" for j, c in enumerate(crow)},
            "prediction": {"score": float(s), "label": None},
            "segments": {},
        }
        for t, row, crow, s in zip(times.tolist(), values, cats.tolist(), score, strict=True)
    ]


def encode(records: list[dict]) -> list[bytes]:
    schema = load_schema("FeatureEvent").parsed
    out, buf = [], io.BytesIO()
    for rec in records:
        buf.seek(0)
        buf.truncate()
        fastavro.schemaless_writer(buf, schema, rec)
        out.append(buf.getvalue())
    return out


def send(producer: Producer, topic: str, values: list[bytes], keys: list[bytes]) -> None:
    """Produce every message, waiting for queue room rather than dropping on BufferError."""
    for key, value in zip(keys, values, strict=True):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)


def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    send(producer, topic, values, keys)
    producer.flush(60)


def read_back(bootstrap: str, topic: str, n: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out: list[bytes] = []
    while len(out) < n:
        out += [m.value() for m in consumer.consume(10_000, 1.0) if not m.error()]
    consumer.close()
    return out


def decode_rates(values: list[bytes], repeats: int = 3) -> tuple[float, float, float]:
    """Bare fastavro per wall and per CPU second, and the serde's decode_many per CPU second.

    Best of `repeats`, alternating, on a shared machine. In chunks of 10,000 whose results
    are dropped, as the worker's batches are: keeping 200,000 decoded dicts alive would
    bill the garbage collector to the decoder."""
    schema = load_schema("FeatureEvent").parsed
    codec = Codec("FeatureEvent", "avro")
    chunks = [values[i : i + 10_000] for i in range(0, len(values), 10_000)]

    def bare_run() -> None:
        for chunk in chunks:
            [fastavro.schemaless_reader(io.BytesIO(v), schema, None) for v in chunk]

    def serde_run() -> None:
        for chunk in chunks:
            codec.decode_many(chunk)

    bare = bare_cpu = serde_cpu = 0.0
    for _ in range(repeats):
        wall, cpu = _timed(bare_run)
        bare, bare_cpu = max(bare, len(values) / wall), max(bare_cpu, len(values) / cpu)
        serde_cpu = max(serde_cpu, len(values) / _timed(serde_run)[1])
    return bare, bare_cpu, serde_cpu


def _timed(run) -> tuple[float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - started, time.process_time() - cpu


FAUST_PROBE = """
import os, sys, time, faust
# parameters via the environment: faust re-imports this module after argv is rewritten
topic_name, n = os.environ["PROBE_TOPIC"], int(os.environ["PROBE_N"])
app = faust.App("probe-" + topic_name, broker="kafka://" + os.environ["PROBE_BOOTSTRAP"],
                store="memory://",
                web_enabled=False, consumer_auto_offset_reset="earliest")
topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw")
seen = {"n": 0, "t0": 0.0}

@app.agent(topic)
async def count(stream):
    async for batch in stream.take(10_000, within=0.5):
        seen["t0"] = seen["t0"] or time.perf_counter()
        seen["n"] += len(batch)
        if seen["n"] >= n:
            with open(os.environ["PROBE_RESULT"], "w") as out:  # faust turns print() into log lines
                out.write(str(seen["n"] / (time.perf_counter() - seen["t0"])))
            os._exit(0)

sys.argv = [sys.argv[0], "worker", "-l", "error", "--without-web"]
app.main()
"""


def faust_rate(bootstrap: str, topic: str, n: int, workdir: Path) -> float:
    """Messages/s a bare faust-streaming agent gets from `stream.take()`: no decoding at all."""
    script, result = workdir / "faust_probe.py", workdir / "faust_rate.txt"
    script.write_text(FAUST_PROBE)
    env = {
        **os.environ,
        "PROBE_TOPIC": topic,
        "PROBE_N": str(n),
        "PROBE_BOOTSTRAP": bootstrap,
        "PROBE_RESULT": str(result),
    }
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env
    )
    if not result.exists():
        raise RuntimeError(f"faust probe failed: {out.stderr[-2000:]}")
    return float(result.read_text())


def write_config(workdir: Path, bootstrap: str, topic: str, app_id: str) -> Path:
    rng = np.random.default_rng(99)
    ref = make_records(rng, np.zeros(20_000, dtype=np.int64), np.zeros(20_000))
    ref_path = workdir / "reference.jsonl"
    ref_path.write_text("".join(json.dumps(r) + "\n" for r in ref))
    raw = {
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": {"features": topic, "alerts": f"{app_id}-alerts"},
        "worker": {"app_id": app_id, "batch_timeout": "50ms", "idle_timeout": "5s"},
        "models": [
            {
                "id": "bench",
                "window": {"size": WINDOW_MS, "allowed_lateness": LATENESS_MS, "min_count": 500},
                "reference": {"source": "file", "path": str(ref_path)},
                "alerts": {"fire_after": 1, "resolve_after": 1},
            }
        ],
    }
    path = workdir / f"{app_id}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class WorkerProcess:
    def __init__(self, config: Path, log: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "driftwire.streams", "--log-level", "WARNING", "worker"]
        cmd += ["--config", str(config), "--metrics-port", str(self.port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWIRE_")}
        self.proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)

    def metric(self, name: str) -> float:
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            text = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def backlog_phase(bootstrap: str, n: int, workdir: Path) -> tuple[float, float, str, list[bytes]]:
    """(events per wall second, events per worker CPU second, topic, the messages)."""
    topic, app_id = f"bench-{uuid.uuid4().hex[:8]}", f"bench{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    rng = np.random.default_rng(1)
    times = 1_700_000_000_000 + np.arange(n, dtype=np.int64) // 10  # 10k events/s event time
    records = make_records(rng, times, np.zeros(n))
    values = encode(records)
    produce(bootstrap, topic, values, [r["prediction_id"].encode() for r in records])
    worker = WorkerProcess(write_config(workdir, bootstrap, topic, app_id), workdir / "w1.log")
    try:
        while worker.metric("driftwire_events_in_total") == 0:
            time.sleep(0.02)
        started, cpu = time.perf_counter(), worker.cpu_seconds()
        while worker.metric("driftwire_events_profiled_total") < n:
            time.sleep(0.1)  # polling costs the worker CPU: not too often
        rate = n / (time.perf_counter() - started)
        cpu_rate = n / (worker.cpu_seconds() - cpu)
        decoding = worker.metric("driftwire_decode_seconds_total")
        processing = worker.metric("driftwire_batch_seconds_sum")
        print(
            f"inside the worker: {decoding:.2f} s decoding of {processing:.2f} s processing "
            f"batches ({decoding / processing:.0%}): end-to-end runs at that share of the "
            "decode rate the same process achieves"
        )
    finally:
        worker.stop()
    return rate, cpu_rate, topic, read_back(bootstrap, topic, n)


def live_phase(bootstrap: str, seconds: float, rate: int, workdir: Path) -> list[float]:
    """Real-time events; returns alert latencies beyond window end + lateness, in s."""
    topic, app_id = f"live-{uuid.uuid4().hex[:8]}", f"live{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    worker = WorkerProcess(write_config(workdir, bootstrap, topic, app_id), workdir / "w2.log")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    rng = np.random.default_rng(2)
    try:
        time.sleep(5)  # let the worker join its group before the clock starts
        start = time.time()
        tick = 0.05
        while time.time() - start < seconds:
            now_ms = int(time.time() * 1000)
            times = np.full(int(rate * tick), now_ms, dtype=np.int64)
            drifted = (now_ms // WINDOW_MS) % 2 == 1  # every other window
            records = make_records(rng, times, np.full(len(times), float(drifted)))
            for rec, value in zip(records, encode(records), strict=True):
                producer.produce(topic, value, rec["prediction_id"].encode())
            producer.poll(0)
            time.sleep(max(0.0, tick - (time.time() * 1000 - now_ms) / 1000))
        producer.flush(30)
        time.sleep(3)
        closes = worker.metric("driftwire_window_close_delay_seconds_count")
        delay = worker.metric("driftwire_window_close_delay_seconds_sum") / max(closes, 1)
        print(
            f"live: {closes:.0f} panes closed, mean close delay {delay:.3f} s past end + lateness"
        )
        return alert_latencies(bootstrap, f"{app_id}-alerts")
    finally:
        worker.stop()


def alert_latencies(bootstrap: str, topic: str) -> list[float]:
    codec = Codec("DriftAlert", "avro")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{uuid.uuid4()}"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out = []
    for msg in consumer.consume(100_000, 5.0):
        if msg.error():
            continue
        alert = codec.decode(msg.value())
        out.append((msg.timestamp()[1] - alert["window_end"] - LATENESS_MS) / 1000)
    consumer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("DRIFTWIRE_BOOTSTRAP_SERVERS"))
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--live-seconds", type=float, default=30.0)
    parser.add_argument("--live-rate", type=int, default=5_000, help="events/s in the live phase")
    parser.add_argument(
        "--faust", action="store_true", help="also time a bare faust agent on the same topic"
    )
    args = parser.parse_args()
    broker = None
    if not args.bootstrap:
        from driftwire.streams.broker import LocalBroker

        broker = LocalBroker(Path(tempfile.mkdtemp()), detach=False)
        args.bootstrap = broker.start(timeout=120)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            e2e, e2e_cpu, topic, values = backlog_phase(args.bootstrap, args.n, workdir)
            bare, bare_cpu, serde_cpu = decode_rates(values)
            size = np.mean([len(v) for v in values])
            print(
                f"events: {args.n:,} FeatureEvents ({N_NUMERIC} numeric + {N_CATEGORICAL} "
                f"categorical, {size:.0f} bytes) on {PARTITIONS} partitions; load average "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            )
            print("                                    per wall s    per CPU s")
            print(f"end-to-end, one worker process:   {e2e:>10,.0f}   {e2e_cpu:>10,.0f}")
            print(f"fastavro decode ceiling (1 core): {bare:>10,.0f}   {bare_cpu:>10,.0f}")
            print(f"serde Codec.decode_many:          {'':>10}   {serde_cpu:>10,.0f}")
            share, share_cpu = e2e / bare, e2e_cpu / bare_cpu
            print(f"end-to-end / decode ceiling:      {share:>10.0%}   {share_cpu:>10.0%}")
            if args.faust:
                rate = faust_rate(args.bootstrap, topic, args.n, workdir)
                print(f"faust agent, stream.take(10_000), no decoding: {rate:>10,.0f} messages/s")
            lat = live_phase(args.bootstrap, args.live_seconds, args.live_rate, workdir)
            if lat:
                p50, p99 = np.percentile(lat, [50, 99])
                print(
                    f"alert latency beyond window end + {LATENESS_MS} ms lateness "
                    f"({len(lat)} alerts at {args.live_rate:,} events/s): "
                    f"p50 {p50:.3f} s, p99 {p99:.3f} s, max {max(lat):.3f} s"
                )
            else:
                print("alert latency: no alerts in the live phase")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
