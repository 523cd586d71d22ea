"""The HTML report is self-contained and its plots render in headless Chromium, offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from driftwire.detectors.generators import StreamSpec, generate, take_events
from driftwire.streams.backtest import BacktestResult, load_backtest
from driftwire.streams.replay import table_from_features
from driftwire.streams.report import render_html, write_html

HOUR = 3_600_000
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Any host lookup fails: a report that needed the network could not render.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=5000",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("CI=true but chromium is not installed (apt-get install -y chromium)")
    pytest.skip("chromium is not installed")


def _run_chromium(args: list[str], profile: Path) -> str:
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> BacktestResult:
    root = tmp_path_factory.mktemp("report")
    spec = StreamSpec(n_numeric=4, n_categorical=1, rate=5.0, seed=2, model_id="fraud")
    batches = list(generate(spec, 3 * HOUR, batch_size=100_000))
    pq.write_table(pa.concat_tables([table_from_features(b) for b in batches]),
                   root / "features.parquet")  # fmt: skip
    pq.write_table(table_from_features(take_events(spec, 10_000)), root / "reference.parquet")
    config = {
        "models": [{"id": "fraud", "window": {"size": 600_000, "min_count": 200},
                    "reference": {"source": "file", "path": "reference.parquet"}}],
        "backtest": {"features": ["features.parquet"],
                     "inject": [{"kind": "shift", "feature": "x2", "at": HOUR, "amount": 1.0}]},
    }  # fmt: skip
    (root / "bt.yaml").write_text(yaml.safe_dump(config))
    return load_backtest(root / "bt.yaml").run()


def test_report_has_no_external_resources(result: BacktestResult) -> None:
    page = render_html(result)
    without_svg_ns = page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"https?://|\bsrc=|\bhref=|@import|url\(", without_svg_ns)
    assert page.count("<svg") == len(result.series) + len(result.performance)
    assert "x2" in page and "found" in page


def test_plots_render_in_headless_chromium(result: BacktestResult, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    write_html(result, report)
    dom = _run_chromium(["--dump-dom", report.as_uri()], tmp_path / "profile-dom")
    rendered = re.search(r'data-plots-rendered="(\d+)"', dom)
    total = re.search(r'data-plots-total="(\d+)"', dom)
    assert rendered and total, "the page's load handler did not run"
    assert int(total.group(1)) == len(result.series) > 0
    # every plot was laid out with non-empty lines
    assert int(rendered.group(1)) == int(total.group(1))
    assert dom.count('class="marker"') >= 1  # the alert on x2 is drawn


def test_screenshot_shows_the_plots(result: BacktestResult, tmp_path: Path) -> None:
    report, blank = tmp_path / "report.html", tmp_path / "blank.html"
    write_html(result, report)
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    shots = {}
    for page in (report, blank):
        shot = tmp_path / f"{page.stem}.png"
        args = ["--window-size=1280,1600", f"--screenshot={shot}", page.as_uri()]
        _run_chromium(args, tmp_path / f"profile-{page.stem}")
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        shots[page.stem] = len(data)
    # a page of plots compresses far worse than an empty page of the same size
    assert shots["report"] > 5 * shots["blank"]
