"""`driftwire worker --config FILE`: run one stream worker until SIGTERM.

Kafka connection settings come from the file's `kafka:` section, overridden by
``DRIFTWIRE_*`` environment variables (see `driftwire env`); topics and worker
settings from `topics:` / `worker:`; models from `models:`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

log = logging.getLogger(__name__)


ConfigOption = typer.Option(
    ...,
    "--config",
    "-c",
    exists=True,
    dir_okay=False,
    help="YAML file with kafka, topics, worker and models sections.",
)
MetricsPortOption = typer.Option(
    None, "--metrics-port", help="Serve /metrics and /health here (overrides the file)."
)


def worker(
    config: Path = ConfigOption,
    metrics_port: int | None = MetricsPortOption,
) -> None:
    """Consume features, publish drift alerts; scale by running more workers (one group)."""
    import dataclasses
    import faulthandler
    import signal

    from driftwire.detectors.config import load_config
    from driftwire.streams.app import Worker, WorkerError, build_engines, serve_metrics
    from driftwire.streams.config import StreamsConfig

    streams = StreamsConfig.load(config)
    if metrics_port is not None:
        worker_cfg = dataclasses.replace(streams.worker, metrics_port=metrics_port)
        streams = dataclasses.replace(streams, worker=worker_cfg)
    engines = build_engines(load_config(config), streams)
    log.info(
        "worker %s: models %s, kafka %s", streams.worker.app_id, sorted(engines), streams.kafka
    )
    try:
        app = Worker(streams, engines)
    except WorkerError as exc:
        log.error("worker cannot start: %s", exc)
        raise typer.Exit(1) from None
    # `kill -USR1 <pid>` prints every thread's stack to stderr: a stuck worker explains itself
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    server = serve_metrics(app)
    try:
        app.run()
    except WorkerError as exc:
        # a refused write or lost credentials: exit non-zero so a supervisor restarts us;
        # nothing past the failure was checkpointed, so the restart re-sends it
        log.error("worker stopped: %s", exc)
        raise typer.Exit(1) from None
    finally:
        if server is not None:
            server.stop()
