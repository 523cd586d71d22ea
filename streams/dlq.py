"""Dead letters: events that cannot be decoded or validated, forwarded untouched with the reason.

The value and key are the original bytes; headers say where the message came from and
why it was rejected, so an operator can fix and re-inject it:

``driftwire.source.topic``, ``driftwire.source.partition``, ``driftwire.source.offset``,
``driftwire.reason`` (human readable) and ``driftwire.error`` (a stable error class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

SOURCE_TOPIC = "driftwire.source.topic"
SOURCE_PARTITION = "driftwire.source.partition"
SOURCE_OFFSET = "driftwire.source.offset"
REASON = "driftwire.reason"
ERROR = "driftwire.error"


class Producer(Protocol):
    def produce(self, topic: str, value: bytes | None = ..., key: bytes | None = ..., **kw): ...


@dataclass(frozen=True)
class DeadLetter:
    """One rejected message and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    error: str  # decode_error, unknown_model, ...

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (SOURCE_TOPIC, self.topic.encode()),
            (SOURCE_PARTITION, str(self.partition).encode()),
            (SOURCE_OFFSET, str(self.offset).encode()),
            (REASON, self.reason.encode()),
            (ERROR, self.error.encode()),
        ]


class DeadLetterWriter:
    """Sends dead letters to one topic through a (confluent-kafka) producer."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def send(self, letter: DeadLetter) -> None:
        self.producer.produce(
            self.topic, value=letter.value, key=letter.key, headers=letter.headers()
        )
