"""File backtests: injected drifts are found with their delays, baselines score worse, a
stationary stream stays quiet, and the readers agree across formats."""

from __future__ import annotations

import json
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
import yaml
from driftwire.detectors.generators import StreamSpec, generate, take_events
from driftwire.streams.backtest import load_backtest
from driftwire.streams.cli import app
from driftwire.streams.replay import (
    FileSource,
    features_from_table,
    read_features,
    table_from_features,
)
from typer.testing import CliRunner

HOUR = 3_600_000
WINDOW = 600_000  # 10 minutes
RATE = 10.0  # events per second of event time: 6,000 events per window
SPEC = StreamSpec(n_numeric=8, n_categorical=2, rate=RATE, seed=11, model_id="fraud")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 hours of stationary traffic, a reference sample, and outcomes (10% of them noisy)
    for every prediction but those of the last 30 minutes."""
    root = tmp_path_factory.mktemp("history")
    batches = list(generate(SPEC, 5 * HOUR, batch_size=50_000))
    pq.write_table(pa.concat_tables([table_from_features(b) for b in batches]),
                   root / "features.parquet")  # fmt: skip
    pq.write_table(table_from_features(take_events(SPEC, 20_000)), root / "reference.parquet")
    rng = np.random.default_rng(3)
    ids = np.concatenate([b.prediction_id for b in batches]).astype(str)
    predicted = np.concatenate([b.label for b in batches]).astype(str)
    times = np.concatenate([b.event_time for b in batches])
    noisy = rng.random(len(ids)) < 0.1
    truth = np.where(noisy, np.where(predicted == "1", "0", "1"), predicted)
    labelled = times < 4 * HOUR + 30 * 60_000  # the last 30 minutes are still unlabelled
    table = pa.table({"model_id": ["fraud"] * len(ids), "prediction_id": ids,
                      "event_time": times + 30_000, "label": truth})  # fmt: skip
    pq.write_table(table.filter(pa.array(labelled)), root / "outcomes.parquet")
    return root


def _config(root: Path, name: str, backtest: dict, model: dict | None = None) -> Path:
    cfg = {
        "models": [
            {
                "id": "fraud",
                "window": {"size": WINDOW, "min_count": 500},
                "reference": {"source": "file", "path": "reference.parquet"},
                **(model or {}),
            }
        ],
        "backtest": {"source": "files", "features": ["features.parquet"], **backtest},
    }
    path = root / name
    path.write_text(yaml.safe_dump(cfg))
    return path


THREE_DRIFTS = [
    {"kind": "shift", "feature": "x1", "at": 1 * HOUR, "amount": 0.5},
    {"kind": "missing", "feature": "x4", "at": 2 * HOUR, "amount": 0.3},
    {"kind": "new_category", "feature": "c1", "at": 3 * HOUR, "amount": 0.2},
]


def test_three_injected_drifts_are_found_with_delays_and_beat_always_firing(
    history: Path,
) -> None:
    result = load_backtest(_config(history, "three.yaml", {"inject": THREE_DRIFTS})).run()
    card = result.card
    assert card is not None
    found = {d.change.feature: d for d in card.detector.detections}
    assert set(found) == {"x1", "x4", "c1"}
    for det in found.values():
        assert det.found, det.change
        # detected when the first window holding drifted data closed, not before the change
        assert 0 < det.delay_ms <= 2 * WINDOW
        assert det.delay_events == pytest.approx(det.delay_ms * RATE / 1000, rel=0.01)
    assert card.detector.false_alarms <= 1
    assert card.always.found == 3
    assert card.always.false_alarms > 10 * max(card.detector.false_alarms, 1)
    assert card.always.false_alarms_per_1000_windows > card.detector.false_alarms_per_1000_windows
    assert card.never.found == 0
    # every firing alert of the detector is on an injected feature
    firing = {a.feature for a in result.alerts if a.status == "firing"}
    assert firing <= {"x1", "x4", "c1"}


def test_stationary_history_stays_quiet(history: Path) -> None:
    result = load_backtest(_config(history, "quiet.yaml", {})).run()
    assert result.windows and len(result.windows) >= 29
    assert [a for a in result.alerts if a.status == "firing"] == []
    # the per-window statistics are recorded even though nothing fired
    ks_x1 = [s for s in result.series if s.feature == "x1" and s.detector == "ks"]
    assert len(ks_x1) == 1 and len(ks_x1[0].window_end) == len(result.windows)
    assert not any(ks_x1[0].breached)


def test_alerts_do_not_depend_on_replay_chunking(history: Path) -> None:
    cfg = _config(history, "chunks.yaml", {"inject": THREE_DRIFTS[:1]})
    small = load_backtest(cfg, {"chunk_rows": 777}).run()
    large = load_backtest(cfg, {"chunk_rows": 200_000}).run()
    assert small.alerts == large.alerts
    assert small.alerts


def test_label_flip_is_concept_drift_and_shows_in_performance(history: Path) -> None:
    cfg = _config(
        history,
        "flip.yaml",
        {"outcomes": ["outcomes.parquet"],
         "inject": [{"kind": "label_flip", "at": 3 * HOUR, "amount": 0.3}]},
        {"concept": {"task": "binary", "label_horizon_ms": 120_000}},
    )  # fmt: skip
    result = load_backtest(cfg).run()
    assert result.card is not None
    (det,) = result.card.detector.detections
    assert det.change.kind == "concept_drift" and det.found
    assert 0 < det.delay_ms <= 3 * WINDOW
    (perf,) = result.performance
    assert perf.metric == "error_rate"
    starts = np.array(perf.window_start)
    errors = np.array([np.nan if v is None else v for v in perf.value])
    before = errors[starts + WINDOW <= 3 * HOUR]
    after = errors[starts >= 3 * HOUR]
    assert np.nanmean(before) == pytest.approx(0.1, abs=0.02)
    assert np.nanmean(after) == pytest.approx(0.34, abs=0.03)
    coverage = dict(zip(perf.window_start, perf.coverage, strict=True))
    assert all(coverage[s] == 1.0 for s in coverage if s + WINDOW <= 4.5 * HOUR)
    assert all(coverage[s] == 0.0 for s in coverage if s >= 4.5 * HOUR)
    assert [v for s, v in zip(perf.window_start, perf.value, strict=True) if s >= 4.5 * HOUR] == [
        None,
        None,
        None,
    ]


def test_sweep_reports_the_false_alarm_trade_off(history: Path) -> None:
    cfg = _config(
        history,
        "sweep.yaml",
        {"inject": THREE_DRIFTS[:1],
         "sweep": {"drift.alpha": [1e-4, 0.3], "drift.min_effect.ks": [0.0, 0.02]}},
    )  # fmt: skip
    result = load_backtest(cfg).run()
    rows = {row.setting: row.score for row in result.sweep}
    assert len(rows) == 4
    strict = rows["drift.alpha=0.0001, drift.min_effect.ks=0.02"]
    loose = rows["drift.alpha=0.3, drift.min_effect.ks=0.0"]
    assert strict.found == loose.found == 1
    assert loose.false_alarms > strict.false_alarms
    # the default run is the strict setting: the sweep re-ran the same data the same way
    assert strict.false_alarms == result.card.detector.false_alarms


def test_cli_writes_reports_and_json_is_complete(history: Path, tmp_path: Path) -> None:
    cfg = _config(history, "cli.yaml", {"inject": THREE_DRIFTS[:1]})
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    run = CliRunner().invoke(
        app,
        ["backtest", "--config", str(cfg), "--no-progress", "--json", str(out_json),
         "--html", str(out_html)],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "found" in run.output
    report = json.loads(out_json.read_text())
    assert report["events"] == 5 * 3600 * int(RATE)
    assert [d["feature"] for d in report["detections"]] == ["x1"]
    assert report["detections"][0]["found"] is True
    assert {s["name"] for s in report["scores"]} == {"detector", "always-firing", "never-firing"}
    assert any(s["feature"] == "x1" and s["detector"] == "ks" for s in report["series"])
    html = out_html.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html


def test_cli_refuses_to_publish_to_the_live_alerts_topic(history: Path) -> None:
    cfg = _config(history, "live.yaml", {})
    raw = yaml.safe_load(cfg.read_text())
    raw["topics"] = {"features": "features", "alerts": "alerts"}
    cfg.write_text(yaml.safe_dump(raw))
    run = CliRunner().invoke(
        app, ["backtest", "--config", str(cfg), "--no-progress", "--publish", "alerts"]
    )
    assert run.exit_code != 0
    assert "live alerts topic" in run.output


def test_readers_agree_across_formats(tmp_path: Path) -> None:
    batch = next(generate(StreamSpec(n_numeric=3, n_categorical=2, rate=10.0), 100_000))
    table = table_from_features(batch)
    pq.write_table(table, tmp_path / "f.parquet")
    pcsv.write_csv(table, tmp_path / "f.csv")
    rows = table.to_pylist()
    (tmp_path / "f.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    schema = fastavro.parse_schema(
        {"type": "record", "name": "Flat", "fields": [
            {"name": f.name, "type": ["null", "long" if f.name == "event_time" else
                                      "double" if pa.types.is_floating(f.type) else "string"]}
            for f in table.schema]}
    )  # fmt: skip
    with open(tmp_path / "f.avro", "wb") as fh:
        fastavro.writer(fh, schema, rows)
    nested = [
        {"model_id": r["model_id"], "prediction_id": r["prediction_id"],
         "event_time": r["event_time"], "numeric": {k: r[k] for k in ("x0", "x1", "x2")},
         "categorical": {k: r[k] for k in ("c0", "c1")},
         "prediction": {"score": r["score"], "label": r["label"]}}
        for r in rows
    ]  # fmt: skip
    (tmp_path / "n.jsonl").write_text("\n".join(json.dumps(r) for r in nested))
    expected = batch
    for name in ("f.parquet", "f.csv", "f.jsonl", "f.avro", "n.jsonl"):
        got = read_features([tmp_path / name])["synthetic"]
        assert sorted(got.numeric) == ["x0", "x1", "x2"], name
        assert sorted(got.categorical) == ["c0", "c1"], name
        np.testing.assert_array_equal(got.event_time, expected.event_time)
        np.testing.assert_allclose(got.numeric["x1"], expected.numeric["x1"])
        np.testing.assert_array_equal(got.categorical["c1"], expected.categorical["c1"])
        np.testing.assert_allclose(got.score, expected.score)


def test_file_steps_are_in_event_time_order_across_models() -> None:
    def table(model: str, times: list[int]) -> pa.Table:
        n = len(times)
        ids = [f"{model}{i}" for i in range(n)]
        return pa.table(
            {"model_id": [model] * n, "prediction_id": ids, "event_time": times,
             "x": np.arange(n, dtype=float)}
        )  # fmt: skip

    features = features_from_table(table("a", [5, 1, 9, 3]))
    features.update(features_from_table(table("b", [2, 8, 4])))
    source = FileSource(features=features)
    steps = list(source.steps(chunk_rows=3))
    marks = [s.watermark for s in steps]
    assert marks == sorted(marks)
    seen = [t for s in steps for b in s.features for t in b.event_time.tolist()]
    assert sorted(seen) == [1, 2, 3, 4, 5, 8, 9]
    previous = -1
    for step in steps:
        times = [t for b in step.features for t in b.event_time.tolist()]
        assert min(times) > previous and max(times) <= step.watermark
        previous = step.watermark


def test_two_models_first_n_reference_and_a_truth_file(tmp_path: Path) -> None:
    tables = []
    for seed, model in enumerate(("alpha", "beta")):
        spec = StreamSpec(n_numeric=4, n_categorical=0, rate=5.0, seed=30 + seed, model_id=model)
        tables += [table_from_features(b) for b in generate(spec, 3 * HOUR, batch_size=60_000)]
    pq.write_table(pa.concat_tables(tables), tmp_path / "both.parquet")
    truth = [{"model": "alpha", "kind": "data_drift", "feature": "x0",
              "at": "1970-01-01T01:30:00Z", "label": "incident 42"}]  # fmt: skip
    (tmp_path / "truth.yaml").write_text(yaml.safe_dump(truth))
    window = {"size": WINDOW, "min_count": 300}
    config = {
        "models": [
            {"id": m, "window": window, "reference": {"source": "first_n", "first_n": 6_000}}
            for m in ("alpha", "beta")
        ],
        "backtest": {
            "features": ["both.parquet"],
            "truth": "truth.yaml",
            "inject": [{"kind": "shift", "feature": "x0", "model": "alpha",
                        "at": int(1.5 * HOUR), "amount": 1.0}],
        },
    }  # fmt: skip
    (tmp_path / "bt.yaml").write_text(yaml.safe_dump(config))
    result = load_backtest(tmp_path / "bt.yaml").run()
    assert result.models == ["alpha", "beta"]
    # the injection and the truth file name the same change: both found, on alpha only
    assert [(c.model, c.label) for c in result.truth] == [
        ("alpha", "incident 42"),
        ("alpha", "shift x0 x1"),
    ]
    assert all(d.found for d in result.card.detector.detections)
    firing = {(a.model_id, a.feature) for a in result.alerts if a.status == "firing"}
    assert ("alpha", "x0") in firing
    # the injection was scoped to alpha: beta's x0 never breached
    (beta_x0,) = [
        s for s in result.series if (s.model, s.feature, s.detector) == ("beta", "x0", "ks")
    ]
    assert len(beta_x0.window_end) >= 15 and not any(beta_x0.breached)
    assert ("beta", "x0") not in firing
    assert {s.model for s in result.series} == {"alpha", "beta"}
    assert {w.model for w in result.windows} == {"alpha", "beta"}


def test_a_reference_change_replays_as_a_live_worker_would_apply_it(
    history: Path, tmp_path: Path
) -> None:
    """x1 moves by +0.5 at 1 h; from 2 h a reference with the moved x1 takes over."""
    from driftwire.detectors.config import parse_config
    from driftwire.detectors.reference import ReferenceProfile

    model = parse_config({"models": [{"id": "fraud"}]}).model("fraud")
    sample = take_events(SPEC, 20_000)
    sample.numeric["x1"] = sample.numeric["x1"] + 0.5
    moved = tmp_path / "moved.ref"
    moved.write_bytes(ReferenceProfile.from_batch(sample, model).to_bytes())
    shift = [{"kind": "shift", "feature": "x1", "at": 1 * HOUR, "amount": 0.5}]
    cfg = _config(history, "change.yaml", {"inject": shift})

    def x1_alerts(*extra: str) -> tuple[list[tuple[str, int]], list[dict]]:
        out = tmp_path / "r.json"
        args = ["backtest", "--config", str(cfg), "--no-progress", "--json", str(out), *extra]
        run = CliRunner().invoke(app, args)
        assert run.exit_code == 0, run.output
        alerts = json.loads(out.read_text())["alerts"]
        x1 = [(a["status"], a["window_start"]) for a in alerts
              if a["feature"] == "x1" and a["detector"] == "ks"]  # fmt: skip
        return x1, alerts

    kept, _ = x1_alerts()
    assert kept == [("firing", 1 * HOUR)]  # without the change the drift never resolves
    changed, alerts = x1_alerts("--reference-change", f"{2 * HOUR - 60_000}={moved}")
    (status, first), (resolved, at) = changed
    assert (status, first, resolved) == ("firing", 1 * HOUR, "resolved")
    assert 2 * HOUR < at <= 2 * HOUR + 3 * WINDOW  # resolve_after clean windows past the switch
    switch = [a for a in alerts if a["kind"] == "lifecycle"]
    assert [(a["detector"], a["window_start"]) for a in switch] == [("reference", 2 * HOUR)]


def test_reference_change_errors_are_clear(history: Path, tmp_path: Path) -> None:
    from driftwire.detectors.config import parse_config
    from driftwire.detectors.reference import ReferenceProfile

    cfg = _config(history, "errors.yaml", {})
    run = CliRunner().invoke(
        app, ["backtest", "--config", str(cfg), "--no-progress", "--reference-change", "x.ref"]
    )
    assert run.exit_code == 2 and "TIME=PROFILE" in run.output
    other = parse_config({"models": [{"id": "other"}]}).model("other")
    spec = StreamSpec(n_numeric=8, n_categorical=2, rate=RATE, seed=1, model_id="other")
    stray = tmp_path / "other.ref"
    stray.write_bytes(ReferenceProfile.from_batch(take_events(spec, 500), other).to_bytes())
    run = CliRunner().invoke(
        app,
        ["backtest", "--config", str(cfg), "--no-progress", "--reference-change",
         f"{HOUR}={stray}"],
    )  # fmt: skip
    assert run.exit_code == 1
    assert "model 'other', not backtested" in run.output
