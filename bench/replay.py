"""Backtest replay throughput: from a Parquet file and from a Kafka topic, 20 numeric features.

Figures, all in one process on the same events (medians of `--repeats` runs):

- Parquet read: file -> per-model columnar batches (`FileSource.from_paths`);
- Parquet replay: the whole backtest path (stage-1 profiler, stage-2 merger, monitor,
  verdict recording, scoring windows) over the in-memory data;
- engine baseline: `Monitor.update_features` + `advance` over the same batches, no
  replay machinery -- the replay figure is quoted as a ratio of it;
- topic: the same events as Avro `FeatureEvent`s on a real broker: bare confluent-kafka
  consume (baseline), the bounded range read + decode + event-time merge, and the full
  topic backtest.

The target is 300,000 events/s for the Parquet replay on one core, so BLAS is pinned to one
thread (numpy reads the variable at import; a multi-threaded BLAS on a shared 2-core box
spins and is several times slower on the engine's small dot products).

    python bench/replay.py [--events 1000000] [--topic-events 200000] [--repeats 3]
    DRIFTWIRE_TEST_BOOTSTRAP=host:port python bench/replay.py   # use a running broker
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy is imported
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import io
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from driftwire.detectors.generators import StreamSpec, generate, take_events
from driftwire.detectors.monitor import Monitor
from driftwire.detectors.reference import ReferenceProfile
from driftwire.streams.backtest import load_backtest
from driftwire.streams.replay import FileSource, table_from_features

log = logging.getLogger("bench.replay")
WINDOW_MS = 60_000
RATE = 1_000.0  # events per second of event time: 60,000 events per window
T0 = 1_700_000_000_000


def median_time(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_history(root: Path, n: int) -> StreamSpec:
    spec = StreamSpec(n_numeric=20, n_categorical=0, rate=RATE, seed=1, model_id="fraud")
    duration = int(n * 1000 / RATE)
    batches = generate(spec, duration, start_ms=T0, batch_size=200_000)
    pq.write_table(pa.concat_tables([table_from_features(b) for b in batches]),
                   root / "features.parquet")  # fmt: skip
    pq.write_table(table_from_features(take_events(spec, 20_000)), root / "reference.parquet")
    return spec


def write_config(root: Path, backtest: dict, extra: dict | None = None) -> Path:
    cfg = {
        "models": [{"id": "fraud", "window": {"size": WINDOW_MS, "min_count": 500},
                    "reference": {"source": "file", "path": str(root / "reference.parquet")}}],
        "backtest": backtest,
        **(extra or {}),
    }  # fmt: skip
    path = root / f"bt-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def bench_parquet(root: Path, n: int, repeats: int) -> None:
    path = root / "features.parquet"
    read_s = median_time(lambda: FileSource.from_paths([path]), repeats)
    cfg = write_config(root, {"source": "files", "features": [str(path)]})
    backtest = load_backtest(cfg)
    replay_s = median_time(lambda: backtest.run_once(backtest.engine), repeats)
    batches = list(backtest.source.steps())  # type: ignore[union-attr]
    model = backtest.engine.models[0]
    reference = ReferenceProfile.from_file(root / "reference.parquet", model)

    def engine_only() -> None:
        monitor = Monitor(model, reference)
        for step in batches:
            for batch in step.features:
                monitor.update_features(batch)
            monitor.advance(step.watermark)

    engine_s = median_time(engine_only, repeats)
    print(f"parquet, {n:,} events x 20 features")
    print(f"  read file -> columnar batches  {n / read_s:>12,.0f} events/s")
    print(f"  backtest replay (engine path)  {n / replay_s:>12,.0f} events/s"
          f"   ({engine_s / replay_s:.2f}x the bare engine)")  # fmt: skip
    print(f"  baseline: bare Monitor         {n / engine_s:>12,.0f} events/s")
    print(f"  read + replay end to end       {n / (read_s + replay_s):>12,.0f} events/s")


def produce_topic(bootstrap: str, topic: str, spec: StreamSpec, n: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from driftwire.schemas.serde import load_schema

    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, 4, 1, config={"retention.ms": "-1"})
    admin.create_topics([new])[topic].result(30)
    schema = load_schema("FeatureEvent").parsed
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "queue.buffering.max.messages": 1_000_000})  # fmt: skip
    buf = io.BytesIO()
    for batch in generate(spec, int(n * 1000 / RATE), start_ms=T0, batch_size=50_000):
        nums = {k: v.tolist() for k, v in batch.numeric.items()}
        for i, (pid, t) in enumerate(zip(batch.prediction_id.tolist(),
                                         batch.event_time.tolist(), strict=True)):  # fmt: skip
            record = {"model_id": "fraud", "prediction_id": str(pid), "event_time": t,
                      "numeric": {k: v[i] for k, v in nums.items()},
                      "prediction": {"score": float(batch.score[i]), "label": None}}  # fmt: skip
            buf.seek(0)
            buf.truncate()
            fastavro.schemaless_writer(buf, schema, record)
            while True:
                try:
                    producer.produce(topic, buf.getvalue(), str(pid).encode(), timestamp=t)
                    break
                except BufferError:
                    producer.poll(0.05)
    producer.flush(120)


def raw_consume(bootstrap: str, topic: str, n: int) -> None:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    seen = 0
    while seen < n:
        seen += sum(1 for m in consumer.consume(10_000, 1.0) if m.error() is None)
    consumer.close()


def bench_topic(root: Path, bootstrap: str, spec: StreamSpec, n: int, repeats: int) -> None:
    from driftwire.schemas.serde import Codec
    from driftwire.streams.backtest import codec_decoder
    from driftwire.streams.replay import TopicRange, topic_steps

    topic = f"bench-replay-{uuid.uuid4().hex[:8]}"
    produce_topic(bootstrap, topic, spec, n)
    raw_s = median_time(lambda: raw_consume(bootstrap, topic, n), repeats)
    decode = codec_decoder(Codec("FeatureEvent", "avro"))

    def read_merge() -> None:
        replay = TopicRange({"bootstrap.servers": bootstrap}, topic)
        count = sum(s.events for s in topic_steps(replay, decode))
        assert count == n, count

    read_s = median_time(read_merge, repeats)
    extra = {"kafka": {"bootstrap_servers": bootstrap},
             "topics": {"features": topic, "alerts": f"{topic}-alerts"}}  # fmt: skip
    cfg = write_config(root, {"source": "topic"}, extra)
    backtest_s = median_time(lambda: load_backtest(cfg).run_once(load_backtest(cfg).engine),
                             repeats)  # fmt: skip
    print(f"topic, {n:,} Avro FeatureEvents x 20 features, 4 partitions")
    print(f"  baseline: bare consume         {n / raw_s:>12,.0f} events/s")
    print(f"  bounded read + decode + merge  {n / read_s:>12,.0f} events/s"
          f"   ({raw_s / read_s:.2f}x bare consume)")  # fmt: skip
    print(f"  topic backtest (engine path)   {n / backtest_s:>12,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--topic-events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-topic", action="store_true", help="skip the Kafka figures")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"BLAS threads: OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, "
          f"numpy {np.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = write_history(root, args.events)
        bench_parquet(root, args.events, args.repeats)
        if args.no_topic:
            return
        bootstrap = os.environ.get("DRIFTWIRE_TEST_BOOTSTRAP")
        if bootstrap:
            bench_topic(root, bootstrap, spec, args.topic_events, args.repeats)
            return
        from driftwire.streams.broker import LocalBroker

        with LocalBroker(root / "kafka", detach=False) as started:
            bench_topic(root, started, spec, args.topic_events, args.repeats)


if __name__ == "__main__":
    main()
