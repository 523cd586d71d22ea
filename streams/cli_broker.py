"""``driftwire broker``: run a local single-node Apache Kafka broker (no Docker needed).

Human messages go to stderr; ``start`` prints only the bootstrap address on stdout so
``export DRIFTWIRE_BOOTSTRAP_SERVERS=$(driftwire broker start)`` works.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from driftwire.streams.broker import (
    DEFAULT_HEAP,
    DEFAULT_VERSION,
    BrokerError,
    LocalBroker,
    default_state_dir,
    driftwire_home,
    ensure_kafka_jars,
)
from rich.console import Console

app = typer.Typer(
    help="Run a local single-node Apache Kafka broker (KRaft) from the official jars.",
    no_args_is_help=True,
)
err = Console(stderr=True)

DirOption = typer.Option(
    None, "--dir", help="Broker state dir (data, logs, pid). Default: $DRIFTWIRE_HOME/broker."
)
VersionOption = typer.Option(DEFAULT_VERSION, "--kafka-version", help="Apache Kafka version.")


def _print_raw(text: str) -> None:
    """Log excerpts hold [brackets] rich would read as markup, and long lines."""
    err.print(text, markup=False, highlight=False, soft_wrap=True)


def _parse_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        overrides[key.strip()] = value.strip()
    return overrides


@app.command()
def start(
    state_dir: Path | None = DirOption,
    port: int | None = typer.Option(None, "--port", help="Client port. Default: a free one."),
    kafka_version: str = VersionOption,
    timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for metadata."),
    heap: str = typer.Option(DEFAULT_HEAP[1], "--heap", help="JVM max heap (-Xmx), e.g. 1g."),
    settings: list[str] = typer.Option(
        [], "--set", help="Extra server.properties entry KEY=VALUE (repeatable)."
    ),
) -> None:
    """Start the broker in the background and print its bootstrap address."""
    broker = LocalBroker(
        state_dir or default_state_dir(),
        port=port,
        version=kafka_version,
        heap=(DEFAULT_HEAP[0], heap),
        overrides=_parse_overrides(settings),
        detach=True,
    )
    try:
        with err.status(f"starting Apache Kafka {kafka_version} ..."):
            bootstrap = broker.start(timeout=timeout)
    except BrokerError as exc:
        err.print("[red]broker failed to start[/red]")
        _print_raw(str(exc))
        raise typer.Exit(1) from exc
    err.print(f"broker up at [bold]{bootstrap}[/bold]; logs: {broker.log_file}")
    typer.echo(bootstrap)


@app.command()
def stop(
    state_dir: Path | None = DirOption,
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds before SIGKILL."),
) -> None:
    """Stop the broker (SIGTERM, then SIGKILL after --timeout)."""
    broker = LocalBroker(state_dir or default_state_dir())
    if broker.stop(timeout=timeout):
        err.print("broker stopped")
    else:
        err.print(f"no broker running in {broker.state_dir}")


@app.command()
def status(
    state_dir: Path | None = DirOption,
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
) -> None:
    """Show whether the broker runs and answers; exit 1 if it does not."""
    info = LocalBroker(state_dir or default_state_dir()).status()
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2))
    elif info.running:
        health = "answering" if info.answering else "[red]not answering[/red]"
        err.print(f"running, {health}: {info.bootstrap} (pid {info.pid}, Kafka {info.version})")
        err.print(f"logs: {info.log_file}")
    else:
        err.print(f"not running (state dir {info.state_dir})")
    if not (info.running and info.answering):
        raise typer.Exit(1)


@app.command()
def fetch(kafka_version: str = VersionOption) -> None:
    """Download the Kafka jars from Maven Central into the cache (for CI / image warm-up)."""
    try:
        classpath = ensure_kafka_jars(kafka_version)
    except BrokerError as exc:
        err.print("[red]fetch failed[/red]")
        _print_raw(str(exc))
        raise typer.Exit(1) from exc
    jars = classpath.split(":")
    err.print(f"Kafka {kafka_version}: {len(jars)} jars ready ({driftwire_home() / 'kafka'})")
