"""Load: a worker fed at twice its sustainable rate loses nothing and drains the lag.

The shortened variant of ``bench/load.py`` (the full run is 10 minutes at 2x): the
sustainable rate is measured on a 30,000-event backlog, then a producer sends at twice
that rate for 15 s. Asserted: the lag grew (the overload was real), it drained, every
acknowledged message was counted in and accounted for, and the worker's peak RSS
stayed bounded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

BENCH = Path(__file__).resolve().parent.parent / "bench"
SECONDS = float(os.environ.get("DRIFTWIRE_LOAD_SECONDS", "15"))
PEAK_RSS_MB = 1_000  # far above what the worker needs, far below unbounded buffering


def _bench_load():
    sys.path.insert(0, str(BENCH))  # load.py imports its neighbour e2e.py
    spec = importlib.util.spec_from_file_location("driftwire_bench_load", BENCH / "load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_twice_the_sustainable_rate_loses_nothing_and_drains(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    load = _bench_load()
    report = load.run_load(kafka_bootstrap, tmp_path, SECONDS, calibration_events=30_000)
    print("\n".join(report.lines()))
    assert report.produced > report.sustainable_rate * SECONDS  # more than 1x got through
    assert report.max_lag > 0.1 * report.produced, "the overload must build a backlog"
    assert report.consumed == report.produced  # counted in == produced: nothing skipped
    assert report.accounted == report.produced  # profiled, late or dead-lettered
    assert report.peak_rss_mb < PEAK_RSS_MB
