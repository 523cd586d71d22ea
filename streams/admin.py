"""Topic creation with confluent-kafka's AdminClient: idempotent, checks partition counts.

>>> TopicSpec("dw-checkpoints", 1, compact=True).new_topic().config["cleanup.policy"]
'compact'
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compact: bool = False
    replication_factor: int = -1  # broker default

    max_message_bytes: int | None = None

    def new_topic(self) -> NewTopic:
        config = {"cleanup.policy": "compact"} if self.compact else {}
        if self.max_message_bytes:
            config["max.message.bytes"] = str(self.max_message_bytes)
        if self.compact:
            # checkpoints are rewritten at every window: let the cleaner keep up
            config |= {"segment.ms": "60000", "min.cleanable.dirty.ratio": "0.1"}
        return NewTopic(self.name, self.partitions, self.replication_factor, config=config)


class TopicMismatchError(RuntimeError):
    """An existing topic has a partition count driftwire cannot work with."""


def partition_counts(admin: AdminClient, names: Iterable[str]) -> dict[str, int]:
    """Partition count of each existing topic among `names`."""
    topics = admin.list_topics(timeout=30).topics
    return {n: len(topics[n].partitions) for n in names if n in topics and not topics[n].error}


def ensure_topics(admin: AdminClient, specs: Iterable[TopicSpec], timeout: float = 30) -> None:
    """Create the missing topics; existing ones must have the expected partition count."""
    specs = list(specs)
    existing = partition_counts(admin, [s.name for s in specs])
    for spec in specs:
        have = existing.get(spec.name)
        if have is not None and have != spec.partitions:
            raise TopicMismatchError(
                f"topic {spec.name} has {have} partitions, expected {spec.partitions}"
            )
    missing = [s.new_topic() for s in specs if s.name not in existing]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            log.info("created topic %s", name)
        except KafkaException as exc:  # created meanwhile by another worker: fine
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    wait_for_leaders(admin, [t.topic for t in missing], timeout)


def wait_for_leaders(admin: AdminClient, names: list[str], timeout: float = 30) -> None:
    """Block until every partition of `names` has a leader (new topics need a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        ready = all(
            n in topics
            and not topics[n].error
            and topics[n].partitions
            and all(p.leader >= 0 for p in topics[n].partitions.values())
            for n in names
        )
        if ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics {names} have no leader after {timeout}s")
        time.sleep(0.2)
