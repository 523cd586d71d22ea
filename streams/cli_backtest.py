"""`driftwire backtest --config FILE`: replay history through the engine, score, report.

The `backtest:` section of the config file says what to replay (files, or the
features/outcomes topics between two times), what to inject and which change points
are known; options here override it. See :mod:`driftwire.streams.backtest`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

log = logging.getLogger(__name__)

ConfigOption = typer.Option(
    ..., "--config", "-c", exists=True, dir_okay=False,
    help="YAML file with models (and kafka/topics for a topic source) and a backtest section.",
)  # fmt: skip
SourceOption = typer.Option(None, "--source", help="files or topic (overrides the file).")
FeaturesOption = typer.Option(None, "--features", help="Features file(s): Parquet/CSV/JSONL/Avro.")
OutcomesOption = typer.Option(None, "--outcomes", help="Outcomes file(s).")
StartOption = typer.Option(None, "--start", help="Topic source: start time (ISO or epoch ms).")
EndOption = typer.Option(None, "--end", help="Topic source: end time (ISO or epoch ms).")
TruthOption = typer.Option(None, "--truth", help="JSON/YAML list of known change points.")
JsonOption = typer.Option(None, "--json", help="Write the JSON report here.")
HtmlOption = typer.Option(None, "--html", help="Write the self-contained HTML report here.")
SweepOption = typer.Option(
    None, "--sweep",
    help="PATH=V1,V2,... over a model setting, e.g. drift.alpha=1e-6,1e-4 (at most twice).",
)  # fmt: skip
MaxDelayOption = typer.Option(None, "--max-delay", help="Later detections count as missed.")
PublishOption = typer.Option(
    None, "--publish", help="Send the replayed alerts to this topic (never the live one)."
)
PublishFormatOption = typer.Option("avro", "--publish-format", help="avro or json.")
BootstrapOption = typer.Option(None, "--bootstrap", help="Kafka bootstrap (overrides config).")
ProgressOption = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.")
ReferenceChangeOption = typer.Option(
    None,
    "--reference-change",
    help="TIME=PROFILE: from TIME (ISO or epoch ms; the switch is at the first window boundary "
    "at or after it) compare with PROFILE (`reference build --out`), as a live worker does when "
    "that profile is published with --effective-from TIME. Repeatable.",
)


def backtest(
    config: Path = ConfigOption,
    source: str | None = SourceOption,
    features: list[str] | None = FeaturesOption,
    outcomes: list[str] | None = OutcomesOption,
    start: str | None = StartOption,
    end: str | None = EndOption,
    truth: str | None = TruthOption,
    json_out: str | None = JsonOption,
    html_out: str | None = HtmlOption,
    sweep: list[str] | None = SweepOption,
    max_delay: str | None = MaxDelayOption,
    publish: str | None = PublishOption,
    publish_format: str = PublishFormatOption,
    bootstrap: str | None = BootstrapOption,
    progress: bool = ProgressOption,
    reference_change: list[str] | None = ReferenceChangeOption,
) -> None:
    """Replay a topic range or files through the detectors and score them."""
    from driftwire.streams.backtest import load_backtest, publish_alerts
    from driftwire.streams.report import print_summary, write_html, write_json
    from rich.console import Console

    overrides: dict[str, Any] = {}
    cwd = Path.cwd()
    for key, value in (("source", source), ("start", start), ("end", end),
                       ("max_delay", max_delay)):  # fmt: skip
        if value is not None:
            overrides[key] = value
    for key, value in (("features", features), ("outcomes", outcomes)):
        if value:
            overrides[key] = [str(cwd / v) for v in value]
    if truth:
        overrides["truth"] = str(cwd / truth)
    if sweep:
        overrides["sweep"] = _sweep_mapping(sweep)
    if reference_change:
        overrides["reference_changes"] = [_change(item, cwd) for item in reference_change]
    try:
        run = load_backtest(config, overrides, bootstrap=bootstrap)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    report = run.spec
    json_path = json_out or report.json_path
    html_path = html_out or report.html_path
    live_topic = _live_alerts_topic(config)
    if publish and publish == live_topic:
        raise typer.BadParameter(
            f"{publish} is the live alerts topic; publish replayed alerts elsewhere",
            param_hint="--publish",
        )
    try:
        result = run.run(progress=progress)
    except ValueError as exc:  # e.g. a reference change for a model the config lacks
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    print_summary(result, Console())
    if json_path:
        write_json(result, json_path)
        typer.echo(f"JSON report: {json_path}")
    if html_path:
        write_html(result, html_path)
        typer.echo(f"HTML report: {html_path}")
    if publish:
        kafka = _kafka_config(config, bootstrap)
        sent = publish_alerts(result.alerts, publish, kafka, publish_format)
        typer.echo(f"published {sent} alerts to {publish}")


def _change(item: str, cwd: Path) -> dict[str, str]:
    at, sep, profile = item.partition("=")
    if not sep or not at or not profile:
        raise typer.BadParameter(
            f"expected TIME=PROFILE, got {item!r}", param_hint="--reference-change"
        )
    return {"at": at, "profile": str(cwd / profile)}


def _sweep_mapping(items: list[str]) -> dict[str, list[Any]]:
    from driftwire.streams.backtest import parse_sweep

    return {name: list(values) for name, values in parse_sweep(items)}


def _live_alerts_topic(config: Path) -> str | None:
    import yaml

    raw = yaml.safe_load(config.read_text()) or {}
    alerts = (raw.get("topics") or {}).get("alerts")
    return alerts.get("name") if isinstance(alerts, dict) else alerts


def _kafka_config(config: Path, bootstrap: str | None) -> dict[str, Any]:
    import yaml
    from driftwire.streams.settings import KafkaSettings

    raw = yaml.safe_load(config.read_text()) or {}
    settings = KafkaSettings.load(raw.get("kafka") or {}, bootstrap_servers=bootstrap)
    return settings.confluent_config()
