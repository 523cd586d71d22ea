"""Window profiles: merge by addition, serialise, count what they should."""

import numpy as np
from driftwire.detectors import ModelConfig, ReferenceProfile, WindowConfig, WindowProfile
from driftwire.detectors.generators import MissingSpike, StreamSpec, generate, take_events
from driftwire.detectors.monitor import Monitor

SPEC = StreamSpec(n_numeric=4, n_categorical=2, rate=1000.0, seed=7)
CFG = ModelConfig(id="m", window=WindowConfig(size=5_000, min_count=100))
REF = ReferenceProfile.from_batch(take_events(SPEC, 5_000), CFG)


def test_any_split_merges_to_the_unsplit_profile():
    batch = next(iter(generate(SPEC, 4_000, batch_size=4_000)))
    mon = Monitor(CFG, REF)
    whole = mon.profile(batch)[0]
    rng = np.random.default_rng(0)
    part = rng.integers(0, 3, len(batch))
    parts = [mon.profile(batch.take(part == k), partition=k)[0] for k in range(3)]
    merged = parts[2].merge(parts[0]).merge(parts[1])
    for name in ("bins", "categories", "missing", "nonfinite", "mins", "maxs"):
        assert np.array_equal(getattr(merged, name), getattr(whole, name))
    assert np.allclose(merged.sums, whole.sums) and np.allclose(merged.sumsq, whole.sumsq)
    assert merged.count == len(batch) and merged.partitions == {0, 1, 2}


def test_avro_round_trip_of_window_and_reference_profiles():
    batch = next(iter(generate(SPEC, 2_000, batch_size=2_000)))
    prof = Monitor(CFG, REF).profile(batch, partition=4)[0]
    back = WindowProfile.from_bytes(prof.to_bytes())
    assert np.array_equal(back.bins, prof.bins) and back.partitions == {4}
    ref = ReferenceProfile.from_bytes(REF.to_bytes())
    assert ref.reference_id == REF.reference_id
    assert np.array_equal(ref.numeric["x1"].edges, REF.numeric["x1"].edges)


def test_counts_missing_nonfinite_out_of_range_and_unseen():
    spikes = [MissingSpike(("x0", "c0"), 0, 10_000, rate=0.5)]
    batch = next(iter(generate(SPEC, 2_000, drifts=spikes, batch_size=2_000)))
    batch.numeric["x1"][:10] = np.inf
    batch.numeric["x2"][:7] = 99.0
    batch.categorical["c1"][:5] = "never-seen"
    mon = Monitor(CFG, REF)
    prof = mon.profile(batch)[0]
    lay = mon.layout_
    n = len(batch)
    assert 0.4 * n < prof.missing[0] < 0.6 * n
    assert prof.missing[len(lay.numeric)] == prof.missing[0]  # c0 shares the spike draws
    assert prof.nonfinite[1] == 10 and prof.finite_counts(lay)[1] == n - 10
    assert prof.bins[lay.bin_offsets[3] - 1] >= 7  # x2's above-max bin
    assert prof.categories[lay.category_offsets[2] - 1] == 5  # c1's unseen bucket


def test_reference_from_file_formats(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    batch = take_events(SPEC, 1_000)
    cols = {**batch.numeric, **batch.categorical, "score": batch.score}
    table = pa.table({k: list(v) for k, v in cols.items()})
    pq.write_table(table, tmp_path / "ref.parquet")
    rows = table.to_pylist()
    (tmp_path / "ref.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = ModelConfig(id="m")
    a = ReferenceProfile.from_file(tmp_path / "ref.parquet", cfg, created_at=1)
    b = ReferenceProfile.from_file(tmp_path / "ref.jsonl", cfg, created_at=1)
    assert sorted(a.numeric) == SPEC.numeric_names and sorted(a.categorical) == ["c0", "c1"]
    assert a.reference_id == b.reference_id
