"""``driftwire validate-config FILE``: every problem in a config file, or a short summary.

The engine's sections (``models``) are checked by :func:`driftwire.detectors.config.load_config`,
which already lists every problem. The Kafka side (``kafka``, ``topics``, ``worker``,
``backtest``) raises on its first problem per call, so each section is checked on its own
here: one bad section does not hide the next. Settings are checked as a worker would see
them, i.e. with the ``DRIFTWIRE_*`` environment applied. Secrets are never printed.

Exit codes: 0 valid, 1 invalid, 2 usage error (e.g. no such file).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml
from driftwire.streams.settings import KafkaSettings
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # the engine pulls in river and scipy: import it only when a command runs
    from driftwire.detectors.config import EngineConfig
    from driftwire.streams.config import StreamsConfig

log = logging.getLogger(__name__)

STREAMS_ONLY = ("kafka", "topics", "worker")


def _problem(section: str, check: Callable[[], Any]) -> str | None:
    """Run one section's parser; its error message (prefixed by the section) or None."""
    try:
        check()
    except (ValueError, TypeError) as exc:  # StreamsConfigError is a ValueError
        text = str(exc)
        return text if text.startswith(section) else f"{section}: {text}"
    return None


def _mapping(raw: Mapping[str, Any], section: str) -> tuple[dict[str, Any], str | None]:
    value = raw.get(section)
    if value is None:
        return {}, None
    if not isinstance(value, Mapping):
        return {}, f"{section}: expected a mapping, got {type(value).__name__}"
    return dict(value), None


def _topics_problems(topics: dict[str, Any]) -> list[str]:
    from driftwire.streams.config import TopicConfig, TopicsConfig

    problems = [
        f"topics.{name} is required" for name in ("features", "alerts") if name not in topics
    ]
    known = {f for f in TopicsConfig.__dataclass_fields__}
    unknown = sorted(set(topics) - known)
    if unknown:
        problems.append(f"topics: unknown keys {unknown}, expected some of {sorted(known)}")
    for name in sorted(set(topics) & known):
        found = _problem(
            f"topics.{name}", lambda n=name: TopicConfig.parse(f"topics.{n}", topics[n])
        )
        if found:
            problems.append(found)
    return problems


def _kafka_problems(kafka: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Unknown keys, then the known ones as a client would get them (env applied)."""
    known = set(KafkaSettings.__dataclass_fields__)
    unknown = sorted(set(kafka) - known)
    problems = (
        [f"kafka: unknown keys {unknown}, expected some of {sorted(known)}"] if unknown else []
    )
    values = {k: v for k, v in kafka.items() if k in known}
    found = _problem("kafka", lambda: KafkaSettings.load(values, env=env))
    return problems + ([found] if found else [])


def streams_problems(raw: Mapping[str, Any], env: Mapping[str, str], base_dir: Path) -> list[str]:
    """Every problem found in the `kafka`, `topics`, `worker` and `backtest` sections."""
    from driftwire.streams.config import StreamsConfig, WorkerConfig

    problems: list[str] = []
    sections = {}
    for section in (*STREAMS_ONLY, "backtest"):
        sections[section], wrong = _mapping(raw, section)
        if wrong:
            problems.append(wrong)
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("worker", lambda: WorkerConfig.parse(sections["worker"])),
    ]
    if sections["backtest"]:
        from driftwire.streams.backtest import BacktestSpec  # heavy import, only when needed

        checks.append(
            ("backtest", lambda: BacktestSpec.from_mapping(sections["backtest"], base_dir))
        )
    problems += [p for section, check in checks if (p := _problem(section, check))]
    problems += _kafka_problems(sections["kafka"], env)
    if "topics" in raw:
        problems += _topics_problems(sections["topics"])
    if not problems and "topics" in raw:
        # anything the per-section checks do not cover (cross-section rules)
        found = _problem("config", lambda: StreamsConfig.from_dict(raw, env=env))
        problems += [found] if found else []
    return problems


def reference_warnings(engine: EngineConfig, base_dir: Path) -> list[str]:
    """Reference files that exist neither beside the config nor in the working directory.

    Warnings, not problems: the file may only exist where the worker runs (a container mount).
    """
    warnings = []
    for i, model in enumerate(engine.models):
        ref = model.reference
        if ref.source != "file" or ref.path is None:
            continue
        path = Path(ref.path)
        if not ((base_dir / path).exists() or path.exists()):
            warnings.append(
                f"models[{i}].reference.path: no file {ref.path!r} here (a worker needs"
                " this file of past events where it runs)"
            )
    return warnings


def _engine(path: Path) -> tuple[EngineConfig | None, list[str]]:
    from driftwire.detectors.config import ConfigError, load_config

    try:
        return load_config(path), []
    except ConfigError as exc:
        return None, list(exc.problems)


def _summary(engine: EngineConfig, streams: StreamsConfig | None, out: Console) -> None:
    from driftwire.streams.config import TopicsConfig

    models = Table("model", "numeric", "categorical", "window", "reference", title="models")
    for m in engine.models:
        numeric = m.numeric if m.numeric == "infer" else str(len(m.numeric))
        categorical = m.categorical if m.categorical == "infer" else str(len(m.categorical))
        window = f"{m.window.type} {m.window.size // 1000}s"
        models.add_row(m.id, numeric, categorical, window, m.reference.source)
    out.print(models)
    if streams is None:
        out.print("no topics section: fine for file backtests; a worker needs one")
        return
    topics = Table("topic", "name", "format", title="topics")
    for role in TopicsConfig.__dataclass_fields__:
        topic = getattr(streams.topics, role)
        if topic is not None:
            topics.add_row(role, topic.name, topic.format)
    out.print(topics)
    kafka = streams.kafka
    auth = f", SASL {kafka.sasl_mechanism} as {kafka.sasl_username}" if kafka.sasl_mechanism else ""
    out.print(f"kafka: {kafka.bootstrap_servers} ({kafka.security_protocol}{auth})")


def validate_config(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True, help="driftwire YAML config file."
    ),
) -> None:
    """Check a config file and list every problem, with the field and what was expected."""
    from driftwire.streams.config import StreamsConfig

    engine, problems = _engine(file)
    warnings = reference_warnings(engine, file.parent) if engine is not None else []
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError):
        raw = None  # the engine loader reported it already
    if isinstance(raw, Mapping):
        problems += streams_problems(raw, os.environ, file.parent)
    out = Console(highlight=False, soft_wrap=True)
    for warning in warnings:
        out.print(f"{file}: warning: {warning}", markup=False)
    if problems:
        for problem in problems:
            out.print(f"{file}: {problem}", markup=False)
        out.print(f"{file}: {len(problems)} problem(s)", markup=False)
        raise typer.Exit(1)
    assert engine is not None and isinstance(raw, Mapping)
    streams = StreamsConfig.from_dict(raw, env=os.environ) if "topics" in raw else None
    out.print(f"{file}: valid", markup=False)
    _summary(engine, streams, out)
