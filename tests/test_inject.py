"""Injections: the right rows change, the input is untouched, chunking does not matter."""

from __future__ import annotations

import numpy as np
import pytest
from driftwire.detectors.batch import FeatureBatch, OutcomeBatch
from driftwire.detectors.inject import Injection, Injector, flip_labels, inject_features


def _batch(n: int = 1000, model: str = "m") -> FeatureBatch:
    rng = np.random.default_rng(1)
    return FeatureBatch(
        model_id=model,
        prediction_id=np.array([f"p{i}" for i in range(n)], dtype=object),
        event_time=np.arange(n, dtype=np.int64) * 10,
        numeric={"x": rng.normal(size=n), "y": rng.normal(size=n)},
        categorical={"c": rng.choice(np.array(["a", "b"], dtype=object), size=n)},
    )


def test_shift_changes_only_rows_after_the_change_and_copies() -> None:
    batch = _batch()
    before = batch.numeric["x"].copy()
    out = inject_features(
        batch, Injection("shift", at=5000, feature="x", amount=3.0), np.zeros(1000)
    )
    late = batch.event_time >= 5000
    np.testing.assert_allclose(out.numeric["x"][late], before[late] + 3.0)
    np.testing.assert_array_equal(out.numeric["x"][~late], before[~late])
    np.testing.assert_array_equal(batch.numeric["x"], before)  # input untouched
    np.testing.assert_array_equal(out.numeric["y"], batch.numeric["y"])


def test_scale_around_center() -> None:
    batch = _batch()
    inj = Injection("scale", at=0, feature="x", amount=2.0, center=1.0)
    out = inject_features(batch, inj, np.zeros(1000))
    np.testing.assert_allclose(out.numeric["x"], 1.0 + (batch.numeric["x"] - 1.0) * 2.0)


def test_missing_fraction_on_numeric_and_categorical() -> None:
    batch = _batch(20_000)
    draws = np.random.default_rng(7).random(20_000)
    num = inject_features(batch, Injection("missing", at=0, feature="x", amount=0.3), draws)
    cat = inject_features(batch, Injection("missing", at=0, feature="c", amount=0.3), draws)
    assert np.isnan(num.numeric["x"]).mean() == pytest.approx(0.3, abs=0.02)
    assert np.mean([v is None for v in cat.categorical["c"]]) == pytest.approx(0.3, abs=0.02)
    # the same draws pick the same rows
    np.testing.assert_array_equal(np.isnan(num.numeric["x"]), draws < 0.3)


def test_new_category_appears_only_after_the_change() -> None:
    batch = _batch(4000)
    inj = Injection("new_category", at=20_000, feature="c", amount=0.5, category="zz")
    out = inject_features(batch, inj, np.random.default_rng(3).random(4000))
    is_new = out.categorical["c"] == "zz"
    assert not is_new[batch.event_time < 20_000].any()
    assert is_new[batch.event_time >= 20_000].mean() == pytest.approx(0.5, abs=0.05)


def test_unknown_feature_is_an_error() -> None:
    with pytest.raises(KeyError, match="nope"):
        inject_features(_batch(), Injection("shift", at=0, feature="nope"), np.zeros(1000))


def test_invalid_injections_are_rejected() -> None:
    with pytest.raises(ValueError, match="fraction"):
        Injection("missing", at=0, feature="x", amount=1.5)
    with pytest.raises(ValueError, match="needs a feature"):
        Injection("shift", at=0)
    with pytest.raises(ValueError, match="unknown"):
        Injection("rotate", at=0, feature="x")  # type: ignore[arg-type]


def test_label_flip_numeric_and_class_labels() -> None:
    n = 10_000
    times = np.arange(n, dtype=np.int64)
    ids = np.array([f"p{i}" for i in range(n)], dtype=object)
    numeric = OutcomeBatch("m", ids, times, np.zeros(n))
    classes = OutcomeBatch("m", ids, times, np.array(["a"] * n, dtype=object))
    draws = np.random.default_rng(0).random(n)
    inj = Injection("label_flip", at=5000, amount=0.4, classes=("a", "b"))
    flipped = flip_labels(numeric, inj, draws)
    assert flipped.label[:5000].sum() == 0
    assert flipped.label[5000:].mean() == pytest.approx(0.4, abs=0.03)
    flipped_cls = flip_labels(classes, inj, draws)
    assert set(flipped_cls.label[:5000]) == {"a"}
    np.testing.assert_array_equal(flipped_cls.label == "b", flipped.label == 1.0)


def test_injector_is_independent_of_batch_sizes() -> None:
    batch = _batch(3000)
    injections = [
        Injection("missing", at=0, feature="x", amount=0.2, seed=5),
        Injection("shift", at=10_000, feature="y", amount=1.0),
    ]
    whole = Injector(injections).features(batch)
    chunked_injector = Injector(injections)
    parts = [
        chunked_injector.features(batch.take(np.arange(a, b))) for a, b in [(0, 700), (700, 3000)]
    ]
    np.testing.assert_array_equal(
        np.isnan(whole.numeric["x"]), np.concatenate([np.isnan(p.numeric["x"]) for p in parts])
    )
    np.testing.assert_allclose(whole.numeric["y"], np.concatenate([p.numeric["y"] for p in parts]))


def test_injector_truth_covers_touched_models_only() -> None:
    injector = Injector(
        [
            Injection("shift", at=100, feature="x", model="m2"),
            Injection("missing", at=50, feature="y", amount=0.1),
            Injection("label_flip", at=70, amount=0.1),
        ]
    )
    injector.features(_batch(10, "m1"))
    injector.features(_batch(10, "m2"))
    truth = injector.truth()
    assert [(c.model, c.feature, c.at, c.kind) for c in truth] == [
        ("m1", "y", 50, None),
        ("m2", "y", 50, None),
        ("m2", "x", 100, None),
    ]
    flips = [c for c in injector.truth(models=["m1"]) if c.kind == "concept_drift"]
    assert [(c.model, c.feature) for c in flips] == [("m1", None)]


def test_from_mapping_accepts_iso_times() -> None:
    inj = Injection.from_mapping(
        {"kind": "shift", "feature": "x", "at": "2026-01-01T00:00:00Z", "amount": 2}
    )
    assert inj.at == 1_767_225_600_000
