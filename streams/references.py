"""Following the compacted references topic while a worker runs.

`driftwire reference build --publish` puts a model's new profile on the topic, keyed by
model id, with the time it applies from in the ``driftwire.effective_from`` header
(else the message timestamp). A worker reads the topic every second with a consumer of
its own (no group: every worker reads all of it) and hands each new profile to the
model's :class:`~driftwire.detectors.timeline.ReferenceTimeline`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition
from driftwire.detectors.reference import ReferenceProfile
from driftwire.detectors.timeline import EFFECTIVE_FROM_HEADER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedReference:
    model_id: str
    reference: ReferenceProfile
    effective_from: int  # epoch ms
    offset: int


def effective_from(msg: Message) -> int:
    """The header's epoch ms, else when the message was produced."""
    for name, value in msg.headers() or []:
        if name == EFFECTIVE_FROM_HEADER and value:
            return int(value.decode())
    return int(msg.timestamp()[1])


class ReferenceWatcher:
    """Polls the references topic (partition 0) from `start_offset`, at most every `every_s`."""

    def __init__(
        self,
        kafka_config: Mapping[str, Any],
        topic: str,
        start_offset: int,
        every_s: float = 1.0,
    ) -> None:
        self.topic = topic
        self.every_s = every_s
        self.next_poll_ = 0.0
        self.consumer = Consumer(
            {**kafka_config, "group.id": f"{topic}-reader", "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(topic, 0, start_offset)])

    def poll(self) -> list[PublishedReference]:
        now = time.monotonic()
        if now < self.next_poll_:
            return []
        self.next_poll_ = now + self.every_s
        found = []
        for msg in self.consumer.consume(1_000, 0):
            if msg.error():
                log.debug("references topic: %s", msg.error())
                continue
            published = _parse(msg)
            if published is not None:
                found.append(published)
        return found

    def close(self) -> None:
        self.consumer.close()


def _parse(msg: Message) -> PublishedReference | None:
    model_id = (msg.key() or b"").decode(errors="replace")
    where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
    if msg.value() is None:  # a tombstone: compaction drops the key, the worker keeps its own
        return None
    try:
        ref = ReferenceProfile.from_bytes(msg.value())
        effective = effective_from(msg)
    except Exception as exc:  # fastavro raises anything on foreign bytes; one bad message
        # must not stop the worker
        log.error("%s: not a reference profile (%s): ignored", where, exc)
        return None
    if ref.model_id != model_id:
        log.error("%s: key %r holds a profile of model %r: ignored", where, model_id, ref.model_id)
        return None
    return PublishedReference(model_id, ref, effective, msg.offset())
