"""``driftwire alerts``: subscribe to the alerts topic and show what fires and resolves."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:  # the engine pulls in river and scipy: import it only when a command runs
    from driftwire.detectors.alerts import Alert
    from driftwire.streams.settings import KafkaSettings

log = logging.getLogger(__name__)
err = Console(stderr=True)

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "green"}


def parse_since(text: str, now_ms: int) -> int:
    """An ISO-8601 time, epoch milliseconds, or a duration ago ("15m", "2h")."""
    from driftwire.detectors.config import parse_duration

    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        return now_ms - int(parse_duration(text))
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            "expected an ISO time (2026-12-03T10:00), epoch ms, or a duration like 15m",
            param_hint="--since",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def format_alert(alert: Alert) -> str:
    """One human line (rich markup) per alert event."""
    when = dt.datetime.fromtimestamp(alert.window_start / 1000, dt.UTC).strftime("%H:%M:%S")
    style = SEVERITY_STYLE.get(alert.severity.value, "")
    where = alert.feature or "-"
    if alert.segment:
        where += f" [{alert.segment}]"
    if alert.p_value is not None:
        # p-value tests alarm on p below the threshold, not on the statistic above it
        test = f"{alert.statistic}={alert.value:.3g} p={alert.p_value:.2g} (<{alert.threshold:.2g})"
    else:
        test = f"{alert.statistic}={alert.value:.4g} (>{alert.threshold:.4g})"
    flag = " (provisional)" if alert.provisional else ""
    return (
        f"[{style}]{alert.status.value:8} {alert.severity.value:8}[/] {when} "
        f"{alert.model_id:15} {alert.kind.value:16} {where:18} {alert.detector}: {test}"
        f" n={alert.window_count}{flag}"
    )


def _connection(
    config: Path | None, bootstrap: str | None, topic: str | None, fmt: str | None
) -> tuple[KafkaSettings, str, str]:
    from driftwire.streams.config import StreamsConfig, StreamsConfigError
    from driftwire.streams.settings import KafkaSettings

    if config is not None:
        try:
            streams = StreamsConfig.load(config)
        except (OSError, StreamsConfigError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--config") from None
        settings = streams.kafka.replace(
            bootstrap_servers=bootstrap or streams.kafka.bootstrap_servers
        )
        return settings, topic or streams.topics.alerts.name, fmt or streams.topics.alerts.format
    return (
        KafkaSettings.load({}, bootstrap_servers=bootstrap),
        topic or "driftwire-alerts",
        fmt or "avro",
    )


def alerts(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="driftwire config file: kafka settings and the alerts topic."
    ),
    bootstrap: str | None = typer.Option(
        None, "--bootstrap", help="Kafka bootstrap servers (overrides config and env)."
    ),
    topic: str | None = typer.Option(None, "--topic", help="Alerts topic (default from config)."),
    fmt: str | None = typer.Option(None, "--format", help="avro or json (default from config)."),
    model: list[str] = typer.Option([], "--model", "-m", help="Only this model (repeatable)."),
    kind: list[str] = typer.Option([], "--kind", "-k", help="Only this kind (repeatable)."),
    severity: str = typer.Option("info", "--severity", help="Minimum: info, warning, critical."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep waiting for new alerts."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="Start at the oldest alert kept on the topic."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Start at a time: ISO-8601, epoch ms, or a duration ago (15m)."
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the broker."),
) -> None:
    """Show drift alerts as they fire and resolve (default: new ones only; see --from-beginning)."""
    from driftwire.schemas.records import alert_to_record
    from driftwire.schemas.serde import Codec
    from driftwire.streams.alerts_reader import (
        AlertFilter,
        AlertsReader,
        AlertsReaderError,
        StartAt,
    )

    if fmt is not None and fmt not in ("avro", "json"):
        raise typer.BadParameter("expected avro or json", param_hint="--format")
    settings, topic_name, topic_format = _connection(config, bootstrap, topic, fmt)
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    start = StartAt(
        position="beginning" if from_beginning else "end",
        since_ms=parse_since(since, now_ms) if since else None,
    )
    try:
        flt = AlertFilter(models=tuple(model), kinds=tuple(kind), min_severity=severity)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--severity") from None
    consumer_config = {**settings.confluent_config(), "socket.timeout.ms": int(timeout * 1000)}
    out = Console(highlight=False, soft_wrap=True)
    try:
        with AlertsReader(
            consumer_config, topic_name, Codec("DriftAlert", topic_format), start, timeout
        ) as reader:
            for alert in reader.read(follow=follow):
                if not flt.accepts(alert):
                    continue
                if as_json:
                    print(json.dumps(alert_to_record(alert), sort_keys=True), flush=True)
                else:
                    out.print(format_alert(alert))
    except AlertsReaderError as exc:
        err.print(f"[red]error:[/] {exc} (bootstrap {settings.bootstrap_servers})")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
