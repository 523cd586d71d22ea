"""``driftwire demo``: watch drift alerts arrive from a live local pipeline in about two minutes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # heavy (engine, Kafka clients): imported when the command runs
    from driftwire.detectors.alerts import Alert
    from driftwire.streams.demo import DemoResult
    from driftwire.streams.simulator import Incident

out = Console(highlight=False, soft_wrap=True)


def _summary(result: DemoResult) -> Table:
    table = Table(title="incidents")
    for col in ("incident", "model", "expected", "announced", "caught", "first alert"):
        table.add_column(col)
    for r in result.incidents:
        first = min(r.alerts, key=lambda a: a.window_end, default=None)
        table.add_row(
            r.incident.name,
            r.incident.model_id,
            r.incident.kind + (f" on {r.incident.feature}" if r.incident.feature else ""),
            f"t+{r.announced_at_s:.0f}s",
            "[green]yes[/]" if r.caught else "[red]no[/]",
            f"{first.detector}:{first.statistic}={first.value:.3g}" if first else "-",
        )
    return table


def demo(
    duration: float = typer.Option(120.0, "--duration", help="Seconds to run (at least 45)."),
    bootstrap: str | None = typer.Option(
        None, "--bootstrap", help="Use this Kafka broker instead of starting a local one."
    ),
    speedup: float = typer.Option(10.0, "--speedup", help="Event-time seconds per real second."),
    rate: int = typer.Option(400, "--rate", help="Events per second per model."),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Where configs, references and logs go (default: a new dir)."
    ),
    seed: int = typer.Option(7, "--seed", help="Random seed of the synthetic world."),
    check: bool = typer.Option(
        False, "--check", help="Exit 1 unless every incident was caught and the control is quiet."
    ),
) -> None:
    """Run a local broker, a worker and a retail stream with three announced incidents.

    Models: fraud-scorer (labels arrive late), recommender, and churn-predictor (a
    stationary control). Incidents: a price-tier change (data drift), a broken upstream
    join (data quality) and fraudsters adapting (concept drift). Ctrl-C ends it cleanly.
    """
    from driftwire.streams.broker import BrokerError
    from driftwire.streams.cli_alerts import format_alert
    from driftwire.streams.demo import DemoSettings, default_workdir, run_demo

    if duration < 45:
        raise typer.BadParameter("the three incidents need at least 45 s", param_hint="--duration")
    settings = DemoSettings(
        workdir=workdir or default_workdir(),
        duration_s=duration,
        speedup=speedup,
        rate=rate,
        seed=seed,
        bootstrap=bootstrap,
    )
    out.print(
        f"[bold]driftwire demo[/]: {duration:.0f} s, event time x{speedup:g}, "
        f"{rate} events/s per model; files in {settings.workdir}"
    )

    def on_alert(alert: Alert) -> None:
        out.print(format_alert(alert))

    def on_incident(inc: Incident, elapsed: float) -> None:
        when = dt.datetime.fromtimestamp(inc.start_ms / 1000, dt.UTC).strftime("%H:%M:%S")
        out.print(
            f"[bold magenta]>> t+{elapsed:.0f}s incident[/] '{inc.name}' on {inc.model_id} "
            f"(event time {when}): {inc.description}; expect {inc.kind}"
        )

    try:
        result = run_demo(settings, on_alert, on_incident, lambda s: out.print(f"[dim]{s}[/]"))
    except KeyboardInterrupt:
        out.print("[yellow]interrupted; everything the demo started has been stopped[/]")
        raise typer.Exit(130) from None
    except (BrokerError, RuntimeError) as exc:
        out.print(f"[red]demo failed:[/] {exc}")
        raise typer.Exit(2) from None
    out.print(_summary(result))
    out.print(
        f"{result.events_produced:,} feature events and {result.outcomes_produced:,} outcomes "
        f"produced; {len(result.alerts)} alert events; control model alerts: "
        f"{len(result.control_alerts)}"
    )
    if check and not result.ok:
        raise typer.Exit(1)
