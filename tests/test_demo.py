"""`driftwire demo` end to end: its own broker, a worker, three incidents, nothing left behind."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (e.g. the demo's work dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


@pytest.mark.kafka
def test_demo_catches_the_three_incidents_and_leaves_nothing_running(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    # kafka_bootstrap: only to fail early with the fixture's message when Java/Maven are missing;
    # the demo starts (and must stop) a broker of its own, as a new user's first command does.
    workdir = tmp_path / "demo"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftwire.streams.cli",
            "demo",
            "--duration",
            "60",
            "--workdir",
            str(workdir),
            "--check",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    worker_log = workdir / "worker.log"
    tail = worker_log.read_text()[-3000:] if worker_log.exists() else "(no worker log)"
    assert result.returncode == 0, f"{output}\n--- worker log ---\n{tail}"
    for incident in ("price tier change", "broken upstream join", "fraudsters adapt"):
        assert f"incident '{incident}'" in output
    assert "control model alerts: 0" in output
    assert time.monotonic() - started < 300
    time.sleep(1)
    assert _processes_mentioning(str(workdir)) == []
