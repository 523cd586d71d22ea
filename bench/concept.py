"""Concept-drift benchmark: joined events/s, and each River detector's delay and false alarms
with driftwire's calibrated defaults vs River's own defaults on the same seeded streams.

Run: python bench/concept.py [--events 1000000] [--seeds 2]
Throughput is a ratio to the bare River update loop measured in the same process (the floor).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from driftwire.detectors.alerts import AlertPolicy
from driftwire.detectors.concept import ConceptConfig, ConceptTracker
from driftwire.detectors.label_generators import error_rate_stream, steps
from driftwire.detectors.sequential import DEFAULT_PARAMS, make_river

MS = 10


def throughput(n: int, detector: str) -> tuple[float, float]:
    """Joined events/s through ConceptTracker (join + release + detector + performance),
    and the bare River loop on the same error bits."""
    stream = error_rate_stream(n, change_at=n, before=0.1, after=0.1, max_delay=2_000, seed=1)
    batches = list(steps(stream, 10_000))  # slicing the input is not the tracker's cost
    tracker = ConceptTracker(
        ConceptConfig(detectors=(detector,), label_horizon_ms=2_000 * MS),
        "bench",
        10_000 * MS,
        AlertPolicy(),
        "ref",
    )
    start = time.perf_counter()
    for step in batches:
        tracker.observe_predictions(step.predictions)
        if step.outcomes is not None:
            tracker.observe_outcomes(step.outcomes)
        tracker.advance(step.watermark)
    tracker.advance(10**12)
    joined_rate = tracker.stats().joined / (time.perf_counter() - start)
    det = make_river(detector)
    values = (1.0 - stream.errors if detector == "fhddm" else stream.errors).tolist()
    start = time.perf_counter()
    for x in values:
        det.update(x)
        _ = det.drift_detected
    return joined_rate, n / (time.perf_counter() - start)


def run_detector(name: str, values: np.ndarray, defaults: bool, change: int) -> tuple[int, int]:
    """(false alarms before ``change``, delay to the first drift after it; -1 = missed)."""
    det = make_river(name, defaults=defaults)
    if name == "fhddm":
        values = 1.0 - values
    if name == "page_hinkley" and defaults:
        values = values / values[:1000].std()  # driftwire feeds PH in sd units
    false, delay = 0, -1
    for i, x in enumerate(values.tolist()):
        det.update(x)
        if det.drift_detected:
            if i < change:
                false += 1
            else:
                delay = i - change
                break
    return false, delay


def quality(events: int, seeds: int) -> None:
    print(f"\nDetection on error bits: {events:,} stationary at 0.10, then 0.20 (delay) ")
    print(f"{'detector':<13}{'params':<11}{'false alarms':>14}{'median delay':>14}{'missed':>8}")
    for name in DEFAULT_PARAMS:
        n = events if name not in ("hddma", "hddmw") else min(events, 300_000)
        for defaults in (True, False):
            false_total, delays = 0, []
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                values = np.r_[rng.random(n) < 0.1, rng.random(30_000) < 0.2].astype(float)
                false, delay = run_detector(name, values, defaults, n)
                false_total += false
                delays.append(delay)
            found = [d for d in delays if d >= 0]
            med = f"{int(np.median(found)):,}" if found else "-"
            label = "driftwire" if defaults else "river"
            print(
                f"{name:<13}{label:<11}{false_total:>14}{med:>14}{len(delays) - len(found):>8}"
                + (f"   (on {n:,})" if n != events else "")
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--throughput-events", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"Throughput, {args.throughput_events:,} predictions, labels delayed 0..2000 events")
    for detector in ("adwin", "ddm"):
        joined, bare = throughput(args.throughput_events, detector)
        print(
            f"  {detector:<6} joined events/s {joined:>11,.0f}   bare River loop {bare:>11,.0f}/s"
            f"   ratio {joined / bare:.2f}"
        )
    quality(args.events, args.seeds)


if __name__ == "__main__":
    main()
