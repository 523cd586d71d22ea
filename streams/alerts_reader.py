"""Read alert events from the alerts topic: the subscriber side of driftwire.

A reader assigns every partition of the topic itself (no consumer group, nothing
committed), starts at the beginning, at a time, or at the end, and either stops at
the end offsets it saw when it started or follows the topic for new alerts.

>>> f = AlertFilter(models=("fraud",), min_severity="warning")
>>> f.min_severity
'warning'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from driftwire.detectors.alerts import Alert
from driftwire.schemas.errors import DecodeError
from driftwire.schemas.records import alert_from_record
from driftwire.schemas.serde import Codec

log = logging.getLogger(__name__)

QUIET_CLIENT_LOG = logging.getLogger("driftwire.librdkafka")
QUIET_CLIENT_LOG.setLevel(logging.CRITICAL)

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


class AlertsReaderError(RuntimeError):
    """The alerts topic cannot be read (missing topic, unreachable broker)."""


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to show; empty tuples mean all."""

    models: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    min_severity: str = "info"

    def __post_init__(self) -> None:
        if self.min_severity not in SEVERITY_RANK:
            raise ValueError(f"severity must be one of {', '.join(SEVERITY_RANK)}")

    def accepts(self, alert: Alert) -> bool:
        if self.models and alert.model_id not in self.models:
            return False
        if self.kinds and alert.kind.value not in self.kinds:
            return False
        # A resolved event carries severity "info"; it passes whenever its kind does.
        if alert.status.value == "resolved":
            return True
        return SEVERITY_RANK[alert.severity.value] >= SEVERITY_RANK[self.min_severity]


@dataclass(frozen=True)
class StartAt:
    """Where reading starts: "beginning", "end", or an event-time in epoch ms."""

    position: str = "end"
    since_ms: int | None = None


class AlertsReader:
    """Iterates decoded alerts from one topic, across all its partitions."""

    def __init__(
        self,
        consumer_config: dict[str, Any],
        topic: str,
        codec: Codec,
        start: StartAt = StartAt(),
        metadata_timeout: float = 10.0,
    ) -> None:
        config = {
            **consumer_config,
            "group.id": "driftwire-alerts-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # librdkafka retries connections forever and logs each try; our own error says it once.
            "logger": QUIET_CLIENT_LOG,
        }
        self.topic = topic
        self.codec = codec
        self.consumer = Consumer(config)
        self.partitions_ = self._assign(start, metadata_timeout)

    def _assign(self, start: StartAt, timeout: float) -> list[TopicPartition]:
        try:
            meta = self.consumer.list_topics(self.topic, timeout=timeout)
        except KafkaException as exc:
            raise AlertsReaderError(f"cannot reach the broker: {exc.args[0]}") from None
        info = meta.topics.get(self.topic)
        if info is None or info.error is not None or not info.partitions:
            raise AlertsReaderError(f"topic {self.topic!r} does not exist")
        parts = [TopicPartition(self.topic, p) for p in sorted(info.partitions)]
        if start.since_ms is not None:
            for tp in parts:
                tp.offset = start.since_ms
            parts = self.consumer.offsets_for_times(parts, timeout=timeout)
            # No message at or after the time: start at the end of that partition.
            for tp in parts:
                if tp.offset < 0:
                    tp.offset = OFFSET_END
        else:
            offset = OFFSET_BEGINNING if start.position == "beginning" else OFFSET_END
            for tp in parts:
                tp.offset = offset
        self.consumer.assign(parts)
        return parts

    def read(
        self, follow: bool, idle_timeout: float = 1.0, until: float | None = None
    ) -> Iterator[Alert]:
        """Alerts in arrival order per partition; without `follow`, stops at the end.

        `until` is a `time.monotonic()` deadline after which reading stops either way.
        """
        at_end: set[int] = set()
        while until is None or time.monotonic() < until:
            wait = (
                idle_timeout
                if until is None
                else max(0.0, min(idle_timeout, until - time.monotonic()))
            )
            msg = self.consumer.poll(wait)
            if msg is None:
                if not follow and len(at_end) == len(self.partitions_):
                    return
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    if not follow and len(at_end) == len(self.partitions_):
                        return
                    continue
                raise AlertsReaderError(str(msg.error()))
            at_end.discard(msg.partition())
            alert = self._decode(msg)
            if alert is not None:
                yield alert

    def _decode(self, msg: Any) -> Alert | None:
        try:
            record = self.codec.decode(
                msg.value(), topic=msg.topic(), partition=msg.partition(), offset=msg.offset()
            )
            return alert_from_record(record)
        except DecodeError as exc:
            log.warning("skipping undecodable alert: %s", exc)
            return None

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> AlertsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
