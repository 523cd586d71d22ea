"""The worker's stages without Kafka: partition profiler, model merger, checkpoints, config."""

from __future__ import annotations

import numpy as np
import pytest
from driftwire.detectors.batch import FeatureBatch
from driftwire.detectors.config import parse_config
from driftwire.detectors.generators import Shift, StreamSpec, generate, take_events
from driftwire.detectors.monitor import Monitor
from driftwire.detectors.reference import ReferenceProfile
from driftwire.streams.config import StreamsConfig, StreamsConfigError
from driftwire.streams.worker import (
    FEATURES,
    OUTCOMES,
    ModelMerger,
    PartialReport,
    PartitionProfiler,
    Timing,
    decode_checkpoint,
    encode_checkpoint,
    feature_batch,
)

PARTITIONS = 3
SPEC = StreamSpec(n_numeric=4, n_categorical=1, rate=200.0, seed=5, model_id="m")
# on at 40-70 s and 100-120 s: firing and resolved alerts on both sides of any cut
DRIFT = [Shift(("x2",), start_ms=40_000, magnitude=1.0, kind="recurring", period_ms=30_000)]
CFG = parse_config(
    {
        "models": [
            {
                "id": "m",
                "window": {"size": "10s", "min_count": 100, "allowed_lateness": "2s"},
                "alerts": {"fire_after": 1, "resolve_after": 2},
            }
        ]
    }
).model("m")
TIMING = Timing(10_000, 2_000)
TIMING_NO_LATENESS = Timing(10_000, 0)


@pytest.fixture(scope="module")
def reference() -> ReferenceProfile:
    return ReferenceProfile.from_batch(take_events(SPEC, 5_000), CFG)


@pytest.fixture(scope="module")
def events() -> FeatureBatch:
    """120 s of events with a drift at 60 s; a few arrive out of order (some too late)."""
    batch = next(iter(generate(SPEC, 120_000, drifts=DRIFT, batch_size=10**6)))
    order = np.arange(len(batch))
    rng = np.random.default_rng(3)
    swaps = rng.choice(len(batch) - 600, size=40, replace=False)
    order[swaps], order[swaps + 600] = order[swaps + 600], order[swaps]  # 3 s out of order
    return batch.take(order)


def records_of(batch: FeatureBatch) -> list[dict]:
    return [
        {
            "model_id": batch.model_id,
            "prediction_id": str(pid),
            "event_time": int(t),
            "numeric": {k: float(v[i]) for k, v in batch.numeric.items()},
            "categorical": {k: v[i] for k, v in batch.categorical.items()},
            "prediction": {"score": float(batch.score[i]), "label": batch.label[i]},
        }
        for i, (pid, t) in enumerate(zip(batch.prediction_id, batch.event_time, strict=True))
    ]


def profiler(partition: int, reference: ReferenceProfile) -> PartitionProfiler:
    monitor = Monitor(CFG, reference)
    names = (tuple(reference.numeric), tuple(reference.categorical))
    return PartitionProfiler(
        partition,
        {"m": monitor},
        {"m": TIMING},
        lambda _m, recs: FeatureBatch.from_records(recs, *names),
    )


def run_stage1(prof: PartitionProfiler, records: list[dict], cuts: list[int]) -> list[bytes]:
    out, start = [], 0
    for end in [*cuts, len(records)]:
        result = prof.observe(records[start:end], next_offset=end)
        out += [r.to_bytes() for r in result.reports]
        start = end
    return out


def test_partials_do_not_depend_on_batch_cuts(events, reference) -> None:
    records = records_of(events)
    one = run_stage1(profiler(0, reference), records, [])
    many = run_stage1(profiler(0, reference), records, list(range(333, len(records), 777)))

    # the same final panes whatever the batches: counts exactly, float sums to rounding
    def panes(reports: list[bytes]) -> list[dict]:
        return [p.to_record() for r in reports for p in PartialReport.from_bytes(r).profiles]

    a, b = panes(one), panes(many)
    assert len(a) == len(b) == 11  # panes up to the watermark (120 s) minus lateness
    for x, y in zip(a, b, strict=True):
        for name in ("window_start", "count", "bins", "categories", "missing", "mins", "maxs"):
            assert x[name] == y[name]
        assert x["sums"] == pytest.approx(y["sums"], rel=1e-12, abs=1e-9)


def test_late_events_are_counted_and_dropped(events, reference) -> None:
    prof = profiler(0, reference)
    records = records_of(events)
    result = prof.observe(records, next_offset=len(records))
    times = events.event_time
    running = np.maximum.accumulate(np.concatenate(([-(10**12)], times)))[:-1]
    late = (times - times % 10_000) + 10_000 + 2_000 <= running
    assert late.sum() > 0
    assert result.late == late.sum()
    assert result.profiled == len(records) - late.sum()
    emitted = sum(p.count for r in result.reports for p in r.profiles if p.segment is None)
    still_open = sum(p.count for p in prof.open_.values() if p.segment is None)
    assert emitted + still_open == result.profiled


def test_unknown_models_are_reported_not_profiled(reference) -> None:
    prof = profiler(1, reference)
    records = records_of(next(iter(generate(SPEC, 2_000))))
    records[3] = {**records[3], "model_id": "ghost"}
    result = prof.observe(records, next_offset=len(records))
    assert result.unknown == [3]
    assert result.profiled == len(records) - 1
    # a stray event far in the future does not drag the watermark along
    stray = {**records[4], "model_id": "ghost", "event_time": 10**12}
    assert prof.observe([stray], next_offset=len(records) + 1).unknown == [0]
    assert prof.watermark_ == max(r["event_time"] for r in records)


def split(events: FeatureBatch) -> list[list[dict]]:
    """Events spread over partitions by prediction id, as a keyed producer would."""
    records = records_of(events)
    return [
        [r for r in records if int(r["prediction_id"]) % PARTITIONS == p] for p in range(PARTITIONS)
    ]


def stage1_reports(parts: list[list[dict]], reference, cut: int) -> list[PartialReport]:
    """Interleave the partitions' reports as they might land on the partials topic."""
    profs = [profiler(p, reference) for p in range(PARTITIONS)]
    reports: list[PartialReport] = []
    for start in range(0, max(len(p) for p in parts), cut):
        for p, recs in enumerate(parts):
            chunk = recs[start : start + cut]
            if chunk:
                reports += profs[p].observe(chunk, next_offset=start + len(chunk)).reports
    return reports


def merge_all(reports: list[PartialReport], reference) -> tuple[list, ModelMerger]:
    merger = ModelMerger("m", Monitor(CFG, reference), TIMING, PARTITIONS, idle_timeout_ms=10**9)
    alerts = []
    for r in reports:
        alerts += merger.observe(r).alerts
    return alerts, merger


def test_merged_partitions_give_the_single_process_alerts(reference) -> None:
    ordered = next(iter(generate(SPEC, 120_000, drifts=DRIFT, batch_size=10**6)))
    parts = split(ordered)
    alerts, _ = merge_all(stage1_reports(parts, reference, cut=500), reference)
    # the whole stream through one in-process monitor, closed where every partition got to
    mon = Monitor(CFG, reference)
    watermark = min(max(r["event_time"] for r in p) for p in parts)
    expected = mon.update_features(ordered) + mon.advance(watermark)
    assert any(a.feature == "x2" and a.status == "firing" for a in alerts)
    assert [a.alert_id for a in alerts] == [a.alert_id for a in expected]
    assert [a.value for a in alerts] == pytest.approx([a.value for a in expected], rel=1e-9)
    assert {a.partitions_reported for a in alerts} == {PARTITIONS}


def test_stationary_stream_stays_quiet(reference) -> None:
    calm = next(iter(generate(SPEC, 120_000, batch_size=10**6)))
    alerts, _ = merge_all(stage1_reports(split(calm), reference, cut=700), reference)
    assert alerts == []


def test_resent_partials_overwrite_and_closed_panes_ignore_them(events, reference) -> None:
    reports = stage1_reports(split(events), reference, cut=500)
    once, _ = merge_all(reports, reference)
    # every report twice, and a late replay of the first half at the end
    twice, _ = merge_all(
        [r for rep in reports for r in (rep, rep)] + reports[: len(reports) // 2], reference
    )
    assert [a.alert_id for a in twice] == [a.alert_id for a in once]


def test_idle_partition_closes_by_timeout_and_says_so(reference) -> None:
    batch = next(iter(generate(SPEC, 40_000, drifts=[Shift(("x1",), 0, 3.0)], batch_size=10**6)))
    parts = split(batch)[:2]  # partition 2 never sends anything
    reports = stage1_reports(parts, reference, cut=400)
    merger = ModelMerger("m", Monitor(CFG, reference), TIMING, PARTITIONS, idle_timeout_ms=5_000)
    for r in reports:
        assert merger.observe(r).closed == []  # waiting on partition 2
    assert merger.tick(now_ms=1_000).closed == []
    result = merger.tick(now_ms=6_000)
    assert result.closed and set(result.partitions_reported) == {2}
    assert result.alerts and {a.partitions_reported for a in result.alerts} == {2}


def test_profiler_checkpoint_resumes_with_identical_partials(events, reference) -> None:
    records = records_of(events)
    cut = len(records) // 2
    straight = run_stage1(profiler(0, reference), records, [cut])
    first = profiler(0, reference)
    head = run_stage1(first, records[:cut], [])
    resumed = profiler(0, reference)
    resumed.load(decode_checkpoint(encode_checkpoint(first.state())))
    assert resumed.offset_ == cut
    tail = [r.to_bytes() for r in resumed.observe(records[cut:], len(records)).reports]
    assert _same_panes(head + tail, straight)


def _same_panes(a: list[bytes], b: list[bytes]) -> bool:
    """Reports equal in everything but float rounding of the moment sums."""
    ra, rb = [PartialReport.from_bytes(x) for x in a], [PartialReport.from_bytes(x) for x in b]
    if [(r.watermark, len(r.profiles)) for r in ra] != [(r.watermark, len(r.profiles)) for r in rb]:
        return False
    pa = [p for r in ra for p in r.profiles]
    pb = [p for r in rb for p in r.profiles]
    return all(
        x.count == y.count
        and np.array_equal(x.bins, y.bins)
        and np.allclose(x.sums, y.sums, rtol=1e-12, atol=1e-9)
        for x, y in zip(pa, pb, strict=True)
    )


def test_merger_checkpoint_resumes_with_identical_alerts(events, reference) -> None:
    reports = stage1_reports(split(events), reference, cut=500)
    straight, _ = merge_all(reports, reference)
    # cut between the first and the last report that raise alerts
    probe = ModelMerger("m", Monitor(CFG, reference), TIMING, PARTITIONS, 10**9)
    raising = [i for i, r in enumerate(reports) if probe.observe(r).alerts]
    assert len(raising) >= 2
    half = raising[0] + 1
    head, merger = merge_all(reports[:half], reference)
    state = decode_checkpoint(encode_checkpoint(merger.state()))
    resumed = ModelMerger.from_state(state, Monitor.restore, "m", TIMING, PARTITIONS, 10**9)
    tail = [a for r in reports[half:] for a in resumed.observe(r).alerts]
    assert head and tail  # the cut really falls between alerts
    assert [a.alert_id for a in head + tail] == [a.alert_id for a in straight]


def test_feature_batch_matches_from_records() -> None:
    records = records_of(next(iter(generate(SPEC, 5_000, batch_size=10**6))))
    records[0]["numeric"]["x1"] = None
    del records[1]["numeric"]["x2"]
    records[2]["categorical"]["c0"] = None
    records[3] = {**records[3], "numeric": {"x0": 1, "unlisted": 2.0}, "segments": {"k": "a"}}
    numeric, categorical = ["x0", "x1", "x2", "absent"], ["c0", "absent_too"]
    want = FeatureBatch.from_records(records, numeric, categorical, segment_key="k")
    got = feature_batch(records, numeric, categorical, segment_key="k")
    for name in numeric:
        assert np.array_equal(got.numeric[name], want.numeric[name], equal_nan=True)
        assert got.numeric[name].dtype == np.float64
    for name in categorical:
        assert got.categorical[name].tolist() == want.categorical[name].tolist()
    assert np.array_equal(got.score, want.score, equal_nan=True)
    for name in ("prediction_id", "label", "segment", "model_version"):
        assert getattr(got, name).tolist() == getattr(want, name).tolist()
    assert np.array_equal(got.event_time, want.event_time)


def test_streams_config_validates_and_names_internal_topics() -> None:
    cfg = StreamsConfig.from_dict(
        {
            "kafka": {"bootstrap_servers": "k:9092"},
            "topics": {"features": {"name": "f", "format": "json"}, "alerts": "a"},
            "worker": {"app_id": "shop", "idle_timeout": "1m", "session_timeout": "10s"},
        },
        env={"DRIFTWIRE_BOOTSTRAP_SERVERS": "other:9092"},
    )
    assert cfg.kafka.bootstrap_servers == "other:9092"  # env overrides the file
    assert (cfg.worker.idle_timeout_ms, cfg.worker.session_timeout_ms) == (60_000, 10_000)
    assert cfg.worker.partials_topic == "shop-partials"
    assert cfg.topics.dead_letter.name == "shop-dead-letter"
    assert cfg.worker.group == "shop"
    with pytest.raises(StreamsConfigError, match="unknown keys"):
        StreamsConfig.from_dict({"topics": {"features": "f", "alerts": "a"}, "worker": {"x": 1}})
    with pytest.raises(StreamsConfigError, match="format"):
        StreamsConfig.from_dict(
            {"topics": {"features": {"name": "f", "format": "xml"}, "alerts": "a"}}
        )
    with pytest.raises(StreamsConfigError, match="alerts"):
        StreamsConfig.from_dict({"topics": {"features": "f"}})


# -- concept drift: predictions and outcomes through the stages ----------------------------------

CONCEPT_CFG = parse_config(
    {
        "models": [
            {
                "id": "m",
                "window": {"size": "10s", "min_count": 100},
                "alerts": {"fire_after": 1, "resolve_after": 2},
                "concept": {"label_ttl_ms": 8_000, "label_horizon_ms": 3_000},
            }
        ]
    }
).model("m")


def per_pane_in_process(preds: FeatureBatch, outs, reference, last_due: int) -> list:
    """The single-process engine fed pane by pane, as stage 2 feeds it."""
    from driftwire.detectors.batch import OutcomeBatch

    mon = Monitor(CONCEPT_CFG, reference)
    pane = 10_000
    p_end = preds.event_time - preds.event_time % pane + pane
    o_end = outs.event_time - outs.event_time % pane + pane
    alerts = []
    for end in range(int(p_end.min()), last_due + 1, pane):
        rows = np.flatnonzero(p_end == end)
        if len(rows):
            order = np.lexsort((preds.prediction_id[rows].astype(str), preds.event_time[rows]))
            alerts += mon.update_features(preds.take(rows[order]))
        rows = np.flatnonzero(o_end == end)
        if len(rows):
            order = np.lexsort((outs.prediction_id[rows].astype(str), outs.event_time[rows]))
            sel = rows[order]
            alerts += mon.update_outcomes(
                OutcomeBatch("m", outs.prediction_id[sel], outs.event_time[sel], outs.label[sel])
            )
        alerts += mon.advance(end)
    return alerts


def test_concept_drift_through_stages_matches_the_single_process_engine() -> None:
    from driftwire.detectors.label_generators import error_rate_stream

    stream = error_rate_stream(60_000, change_at=30_000, before=0.1, after=0.3, max_delay=200)
    preds, outs = stream.predictions, stream.outcomes
    reference = ReferenceProfile.from_batch(preds.take(np.arange(5_000)), CONCEPT_CFG)
    timings = {"m": TIMING_NO_LATENESS}
    pred_records = [
        {
            "model_id": "m",
            "prediction_id": pid,
            "event_time": int(t),
            "prediction": {"score": float(sc), "label": lab},
        }
        for pid, t, sc, lab in zip(
            preds.prediction_id, preds.event_time, preds.score, preds.label, strict=True
        )
    ]
    out_records = [
        {"model_id": "m", "prediction_id": pid, "event_time": int(t), "label": lab, "value": None}
        for pid, t, lab in zip(outs.prediction_id, outs.event_time, outs.label, strict=True)
    ]
    monitor = Monitor(CONCEPT_CFG, reference)
    names = (tuple(reference.numeric), tuple(reference.categorical))

    def stage1(source: str, p: int) -> PartitionProfiler:
        return PartitionProfiler(
            p,
            {"m": monitor},
            timings,
            lambda _m, recs: feature_batch(recs, *names),
            keep_rows=frozenset({"m"}),
            source=source,
        )

    inputs = [
        (stage1(FEATURES, p), [r for r in pred_records if int(r["prediction_id"][1:]) % 3 == p])
        for p in range(3)
    ]
    inputs += [
        (stage1(OUTCOMES, k), [r for r in out_records if int(r["prediction_id"][1:]) % 2 == k])
        for k in range(2)
    ]
    reports = []
    for start in range(0, 40_000, 1_500):
        for prof, recs in inputs:
            chunk = recs[start : start + 1_500]
            if chunk:
                reports += prof.observe(chunk, start + len(chunk)).reports
    merger = ModelMerger("m", Monitor(CONCEPT_CFG, reference), TIMING_NO_LATENESS, 3, 10**9, 2)
    alerts = [a for r in reports for a in merger.observe(r).alerts]
    expected = per_pane_in_process(preds, outs, reference, merger.closed_end_)
    concept = [a for a in expected if a.kind == "concept_drift" and a.status == "firing"]
    assert concept, "the error-rate step must raise a concept-drift alert"
    assert min(a.window_start for a in concept) >= 300_000  # not before the change
    assert [a.alert_id for a in alerts] == [a.alert_id for a in expected]
