"""Decode throughput of driftwire's serde vs bare fastavro, same process, same records.

FeatureEvent with 20 numeric + 5 categorical features. The baseline is
``fastavro.schemaless_reader`` on a pre-parsed schema, one message at a time, with
no checks: driftwire's figures are quoted as a ratio of it.

    python bench/decode.py [--n 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import time
from collections.abc import Callable

import fastavro
from driftwire.schemas.serde import Codec, load_schema

log = logging.getLogger("bench.decode")


def make_event(i: int) -> dict:
    return {
        "model_id": "fraud-scorer",
        "model_version": "v7",
        "prediction_id": f"req-{i}",
        "event_time": 1_764_768_000_000 + i,
        "numeric": {f"num_{k}": (i * 0.37 + k) % 101.0 for k in range(20)},
        "categorical": {f"cat_{k}": f"value-{(i + k) % 13}" for k in range(5)},
        "prediction": {"score": (i % 100) / 100, "label": None},
        "segments": {"country": "FR"},
    }


def rate(run: Callable[[], object], n: int, repeats: int) -> float:
    """Median records/s over `repeats` timed runs of a callable decoding `n` records."""
    run()  # warm caches (schema ids, imports)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="records per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    schema = load_schema("FeatureEvent")
    events = [make_event(i) for i in range(args.n)]
    avro = Codec(schema, "avro")
    confluent = Codec(schema, "confluent", registry={1: schema.text}, schema_id=1)
    json_codec = Codec(schema, "json")
    plain = [avro.encode(e) for e in events]
    framed = [confluent.encode(e) for e in events]
    as_json = [json_codec.encode(e) for e in events]
    reader = schema.reader

    def baseline() -> None:
        for data in plain:
            fastavro.schemaless_reader(io.BytesIO(data), reader, None)

    cases: dict[str, Callable[[], object]] = {
        "fastavro schemaless_reader, one at a time (baseline)": baseline,
        "Codec('avro').decode, one at a time": lambda: [avro.decode(d) for d in plain],
        "Codec('avro').decode_many": lambda: avro.decode_many(plain),
        "Codec('confluent').decode_many (static registry)": lambda: confluent.decode_many(framed),
        "Codec('json').decode_many": lambda: json_codec.decode_many(as_json),
    }
    log.info(
        "FeatureEvent, 20 numeric + 5 categorical, %d bytes avro; n=%d, median of %d",
        len(plain[0]),
        args.n,
        args.repeats,
    )
    base = None
    for name, run in cases.items():
        per_s = rate(run, args.n, args.repeats)
        base = base or per_s
        log.info("%-55s %10.0f records/s  %5.2fx baseline", name, per_s, per_s / base)


if __name__ == "__main__":
    main()
