"""Which reference profile each pane of a model is compared with, when references change.

A new profile published while workers run applies from its *switch time*: its effective
time rounded up to the model's window hop, so no pane is split between two references.
Switch times come from the published profile (not from when a worker happened to read it),
which is what keeps alert ids identical across workers and restarts: every worker profiles
a pane against the same reference, and the model's monitor switches at the same window.

>>> from driftwire.detectors.config import ModelConfig
>>> from driftwire.detectors.generators import StreamSpec, take_events
>>> cfg = ModelConfig(id="m")
>>> def ref(seed):
...     return ReferenceProfile.from_batch(take_events(StreamSpec(seed=seed), 500), cfg)
>>> timeline = ReferenceTimeline(hop=60_000, initial=ref(1))
>>> timeline.add(ref(2), effective_from=90_000)  # the next hop boundary
120000
>>> timeline.add(ref(2), effective_from=200_000) is None  # the latest already: no-op
True
>>> timeline.index(np.array([0, 60_000, 120_000, 180_000])).tolist()
[0, 0, 1, 1]
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from driftwire.detectors.reference import ReferenceProfile
from driftwire.detectors.windows import NO_WATERMARK

#: Kafka header on a references-topic message: epoch ms from which the profile applies.
EFFECTIVE_FROM_HEADER = "driftwire.effective_from"


def switch_time(effective_from: int, hop: int) -> int:
    """First pane start at or after `effective_from`."""
    return -(-int(effective_from) // hop) * hop


@dataclass
class ReferenceTimeline:
    """(switch time, profile) pairs of one model, oldest first; the first applies from the
    beginning of time. At most `keep` entries: the oldest are forgotten."""

    hop: int
    initial: ReferenceProfile
    keep: int = 8
    entries_: list[tuple[int, ReferenceProfile]] = field(default_factory=list)
    offset_: int = 0  # next references-topic offset already taken into account

    def __post_init__(self) -> None:
        if not self.entries_:
            self.entries_ = [(NO_WATERMARK, self.initial)]

    @property
    def ids(self) -> list[str]:
        return [ref.reference_id for _, ref in self.entries_]

    @property
    def starts(self) -> np.ndarray:
        return np.array([start for start, _ in self.entries_], dtype=np.int64)

    def add(self, reference: ReferenceProfile, effective_from: int) -> int | None:
        """Schedule `reference`; its switch time, or None when it is the latest already."""
        if reference.reference_id == self.ids[-1]:
            return None
        same_columns(self.initial, reference)
        start = max(switch_time(effective_from, self.hop), self.entries_[-1][0] + self.hop)
        self.entries_.append((start, reference))
        del self.entries_[: max(len(self.entries_) - self.keep, 0)]
        return start

    def index(self, pane_starts: np.ndarray) -> np.ndarray:
        """Entry index in effect for each pane start (the oldest kept one before it)."""
        return np.maximum(np.searchsorted(self.starts, pane_starts, side="right") - 1, 0)

    def later_than(self, start: int) -> list[tuple[int, ReferenceProfile]]:
        return [(s, ref) for s, ref in self.entries_ if s > start]

    def to_state(self) -> dict[str, Any]:
        return {
            "hop": self.hop,
            "offset": self.offset_,
            "entries": [
                [start, base64.b64encode(ref.to_bytes()).decode()] for start, ref in self.entries_
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], keep: int = 8) -> ReferenceTimeline:
        entries = [
            (int(start), ReferenceProfile.from_bytes(base64.b64decode(blob)))
            for start, blob in state["entries"]
        ]
        return cls(int(state["hop"]), entries[0][1], keep, entries, int(state.get("offset", 0)))


def same_columns(current: ReferenceProfile, new: ReferenceProfile) -> None:
    """A new reference must describe the same columns (ValueError naming them if not)."""

    def columns(ref: ReferenceProfile) -> tuple[list[str], list[str], bool, bool]:
        return list(ref.numeric), list(ref.categorical), ref.score is None, ref.label is None

    if columns(current) != columns(new):
        raise ValueError(
            f"reference {new.reference_id} of model {new.model_id} describes numeric "
            f"{list(new.numeric)}, categorical {list(new.categorical)} (score "
            f"{new.score is not None}, label {new.label is not None}); the one in use "
            f"{list(current.numeric)}, {list(current.categorical)} (score "
            f"{current.score is not None}, label {current.label is not None})"
        )
