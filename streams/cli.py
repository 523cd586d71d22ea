"""The ``driftwire`` command line.

Each command group lives in its own module ``streams/cli_<name>.py`` exposing a
``typer.Typer`` called ``app`` (or a plain function for a single command).  Adding
one is two lines here: the import and the ``add_typer`` / ``command`` call.
"""

from __future__ import annotations

import logging

import typer
from driftwire.streams.cli_alerts import alerts as alerts_command
from driftwire.streams.cli_backtest import backtest as backtest_command
from driftwire.streams.cli_broker import app as broker_app
from driftwire.streams.cli_config import validate_config as validate_config_command
from driftwire.streams.cli_demo import demo as demo_command
from driftwire.streams.cli_reference import app as reference_app
from driftwire.streams.cli_topics import app as topics_app
from driftwire.streams.cli_worker import worker as worker_command
from driftwire.streams.settings import ENV_VARS

app = typer.Typer(
    name="driftwire",
    help="Kafka-native drift detection for machine-learning models in production.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold passwords
)

app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(reference_app, name="reference")
app.command("alerts")(alerts_command)
app.command("backtest")(backtest_command)
app.command("demo")(demo_command)
app.command("worker")(worker_command)
app.command("validate-config")(validate_config_command)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str) -> None:
    """Set up logging for the process; called once, before any command runs."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )


@app.callback()
def _root(
    log_level: str = typer.Option(
        "INFO",
        "--log-level",
        envvar="DRIFTWIRE_LOG_LEVEL",
        help=f"One of {', '.join(LOG_LEVELS)}.",
        case_sensitive=False,
    ),
) -> None:
    if log_level.upper() not in LOG_LEVELS:
        choices = ", ".join(LOG_LEVELS)
        raise typer.BadParameter(f"must be one of {choices}", param_hint="--log-level")
    configure_logging(log_level)


@app.command("env")
def env_vars() -> None:
    """List the DRIFTWIRE_* environment variables driftwire reads."""
    for var in ENV_VARS:
        typer.echo(f"{var.name:36} {var.description}")


def main() -> None:
    """Console-script entry point (``driftwire``)."""
    app(prog_name="driftwire")


if __name__ == "__main__":
    main()
