"""Typed errors raised by the serde: every failure names where it happened and why.

>>> err = DecodeError("wrong magic byte 0x7b", topic="features", partition=3, offset=1042)
>>> str(err)
'features[3]@1042: wrong magic byte 0x7b'
>>> isinstance(err, ValueError)
True
"""

from __future__ import annotations


class SerdeError(ValueError):
    """Base of the serde's errors: a reason plus where the message came from, when known."""

    def __init__(
        self,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        schema: str | None = None,
        raw: bytes | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.schema = schema
        # The original bytes, so a dead-letter producer can forward them untouched.
        self.raw = raw
        # Position in the batch given to decode_many, when decoded in a batch.
        self.index = index

    @property
    def where(self) -> str:
        """`topic[partition]@offset` with whatever parts are known, else the schema name."""
        where = self.topic or ""
        if self.partition is not None:
            where += f"[{self.partition}]"
        if self.offset is not None:
            where += f"@{self.offset}"
        return where or self.schema or ""

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason

    def __reduce__(self):  # keep the keyword-only context when pickled across processes
        return (_rebuild, (type(self), self.reason, self.__dict__.copy()))


def _rebuild(cls: type[SerdeError], reason: str, state: dict) -> SerdeError:
    err = cls(reason)
    err.__dict__.update(state)
    return err


class DecodeError(SerdeError):
    """Bytes (or a record) that cannot be turned into a valid driftwire record."""


class EncodeError(SerdeError):
    """A record that cannot be encoded: wrong types, missing fields, values out of contract."""
