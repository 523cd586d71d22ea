from pathlib import Path

import pytest
from driftwire.detectors import ConfigError, load_config

EXAMPLE = Path(__file__).parents[1] / "examples" / "driftwire.yaml"


def test_example_config_loads_every_option():
    cfg = load_config(EXAMPLE)
    m = cfg.models[0]
    assert m.window.size == 600_000 and m.window.allowed_lateness == 120_000
    assert m.segments is not None and m.segments.key == "country"
    assert m.drift.correction == "bh"


def test_invalid_file_reports_every_problem_with_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "kafka: {bootstrap: x}\n"
        "models:\n"
        "  - id: a\n"
        "    window: {size: 10 minutes, min_count: -1}\n"
        "    drift: {correction: holm}\n"
        "    numeric: 3\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    text = str(err.value)
    assert f"{bad}: models[0].window.size: expected a duration" in text
    assert "models[0].drift.correction" in text and "holm" in text
    assert "models[0].numeric" in text
    assert len(err.value.problems) == 3


def test_hop_must_divide_size(tmp_path):
    bad = tmp_path / "hop.yaml"
    bad.write_text("models: [{id: a, window: {type: hopping, size: 10m, hop: 3m}}]\n")
    with pytest.raises(ConfigError, match="hop must divide size"):
        load_config(bad)
