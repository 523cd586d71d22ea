"""The Kafka side of the config file: `kafka`, `topics` and `worker` sections.

The same YAML file carries the engine's `models` section (see
:mod:`driftwire.detectors.config`); each side validates its own sections.

>>> cfg = StreamsConfig.from_dict({
...     "topics": {"features": "features", "outcomes": {"name": "outcomes", "format": "json"},
...                "alerts": "alerts"},
...     "worker": {"app_id": "dw", "idle_timeout": "30s"},
... }, env={})
>>> cfg.topics.features.name, cfg.topics.outcomes.format, cfg.worker.idle_timeout_ms
('features', 'json', 30000)
>>> cfg.worker.partials_topic, cfg.topics.dead_letter.name, cfg.topics.references.name
('dw-partials', 'dw-dead-letter', 'dw-references')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from driftwire.detectors.config import parse_duration
from driftwire.streams.settings import KafkaSettings

FORMATS = ("avro", "confluent", "json")


class StreamsConfigError(ValueError):
    """An invalid `topics` / `worker` section; the message names the key."""


def _check_keys(section: str, raw: Mapping[str, Any], cls: type) -> None:
    unknown = set(raw) - {f.name for f in fields(cls)}
    if unknown:
        raise StreamsConfigError(f"{section}: unknown keys {sorted(unknown)}")


def _duration_ms(section: str, value: Any) -> int:
    try:
        ms = parse_duration(value)
    except ValueError as exc:
        raise StreamsConfigError(f"{section}: {exc}") from None
    if not isinstance(ms, int) or ms < 0:
        raise StreamsConfigError(f"{section}: expected a duration >= 0, got {value!r}")
    return ms


@dataclass(frozen=True)
class TopicConfig:
    """One topic: its name, wire format and (for topics driftwire creates) partition count."""

    name: str
    format: str = "avro"
    partitions: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise StreamsConfigError("topic name must not be empty")
        if self.format not in FORMATS:
            raise StreamsConfigError(f"topic {self.name}: format must be one of {FORMATS}")
        if self.partitions is not None and self.partitions < 1:
            raise StreamsConfigError(f"topic {self.name}: partitions must be >= 1")

    @classmethod
    def parse(cls, section: str, raw: Any) -> TopicConfig:
        if isinstance(raw, str):
            return cls(name=raw)
        if not isinstance(raw, Mapping):
            raise StreamsConfigError(f"{section}: expected a topic name or a mapping")
        _check_keys(section, raw, cls)
        return cls(**raw)


@dataclass(frozen=True)
class TopicsConfig:
    features: TopicConfig
    alerts: TopicConfig
    dead_letter: TopicConfig
    outcomes: TopicConfig | None = None
    # compacted, keyed by model id, values are ReferenceProfile Avro (`driftwire reference
    # build --publish`); from_dict names it `<app_id>-references` when the file does not
    references: TopicConfig | None = None


@dataclass(frozen=True)
class WorkerConfig:
    """How a `driftwire worker` runs. Internal topics are named after `app_id`."""

    app_id: str = "driftwire"
    group_id: str | None = None  # defaults to app_id
    idle_timeout_ms: int = 30_000
    metrics_port: int | None = None  # None: no HTTP endpoint
    metrics_host: str = "127.0.0.1"
    schema_registry_url: str | None = None
    batch_size: int = 10_000
    batch_timeout_ms: int = 200
    # how long the group waits for a crashed worker before handing its partitions on
    session_timeout_ms: int = 45_000
    internal_partitions: int | None = None  # partials topic; default: features partitions
    # events stamped further ahead of the worker's clock are dead-lettered, not profiled
    # (Kafka 4 refuses message timestamps more than an hour ahead by default, too)
    max_future_ms: int = 3_600_000

    def __post_init__(self) -> None:
        if not self.app_id or not self.app_id.replace("-", "").replace("_", "").isalnum():
            raise StreamsConfigError("worker.app_id: letters, digits, '-' and '_' only")
        if self.batch_size < 1:
            raise StreamsConfigError("worker.batch_size must be >= 1")

    @property
    def group(self) -> str:
        return self.group_id or self.app_id

    @property
    def partials_topic(self) -> str:
        return f"{self.app_id}-partials"

    @property
    def checkpoint_topic(self) -> str:
        return f"{self.app_id}-checkpoints"

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> WorkerConfig:
        values = dict(raw)
        for key in ("idle_timeout", "batch_timeout", "session_timeout", "max_future"):
            if key in values:
                values[f"{key}_ms"] = _duration_ms(f"worker.{key}", values.pop(key))
        _check_keys("worker", values, cls)
        return cls(**values)


@dataclass(frozen=True)
class StreamsConfig:
    kafka: KafkaSettings
    topics: TopicsConfig
    worker: WorkerConfig = field(default_factory=WorkerConfig)

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> StreamsConfig:
        worker = WorkerConfig.parse(raw.get("worker") or {})
        topics_raw = dict(raw.get("topics") or {})
        for required in ("features", "alerts"):
            if required not in topics_raw:
                raise StreamsConfigError(f"topics.{required} is required")
        topics_raw.setdefault("dead_letter", f"{worker.app_id}-dead-letter")
        topics_raw.setdefault("references", f"{worker.app_id}-references")
        _check_keys("topics", topics_raw, TopicsConfig)
        topics = TopicsConfig(
            **{k: TopicConfig.parse(f"topics.{k}", v) for k, v in topics_raw.items()}
        )
        return cls(KafkaSettings.load(raw.get("kafka") or {}, env=env), topics, worker)

    @classmethod
    def load(cls, path: str | Path, env: Mapping[str, str] | None = None) -> StreamsConfig:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_dict(raw, env=env)
