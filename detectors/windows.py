"""Event-time windows driven by a watermark, never by the wall clock.

Windows are aligned to the epoch. A hopping window of `size` with step `hop` is the sum of
`size // hop` consecutive *panes* of length `hop` (tumbling: one pane), so each event is
profiled once, into its pane, whatever the overlap.

Window ``[s, s + size)`` closes when the watermark reaches ``s + size + allowed_lateness``.
An event is accepted while the last window containing its pane (the one starting at the pane)
is open; a later event is *late-dropped*: counted, never silently lost. Watermarks only move
forward; a smaller one is ignored (and counted by the monitor).

>>> clock = WindowClock(size=60_000, hop=30_000, allowed_lateness=5_000)
>>> clock.accepts(30_000)
True
>>> clock.advance(95_000, panes=[0, 30_000, 60_000])  # every window ending by 90s closes
[-30000, 0, 30000]
>>> clock.accepts(30_000), clock.accepts(60_000)
(False, True)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: Watermark before any advance: nothing is closed.
NO_WATERMARK = -(2**62)


def pane_starts(event_time: np.ndarray, hop: int) -> np.ndarray:
    """Start of the pane of each event (floor to a multiple of `hop`, also for t < 0)."""
    return (event_time // hop) * hop


@dataclass
class WindowClock:
    """Which windows are open, which close at a watermark. Picklable."""

    size: int
    hop: int
    allowed_lateness: int = 0
    watermark_: int = NO_WATERMARK

    def window_closes_at(self, start: int) -> int:
        return start + self.size + self.allowed_lateness

    def accepts(self, pane_start: int) -> bool:
        """Can events of this pane still change an open window?"""
        return self.window_closes_at(pane_start) > self.watermark_

    def windows_of_pane(self, pane_start: int) -> list[int]:
        """Starts of the windows containing the pane."""
        return [pane_start - j * self.hop for j in range(self.size // self.hop)]

    def advance(self, watermark: int, panes: Iterable[int]) -> list[int]:
        """Move the watermark; return the starts of the windows touching `panes` (the panes
        holding data) that closed with this move, oldest first."""
        if watermark <= self.watermark_:
            return []
        old, self.watermark_ = self.watermark_, watermark
        due = {
            s
            for p in panes
            for s in self.windows_of_pane(p)
            if old < self.window_closes_at(s) <= watermark
        }
        return sorted(due)

    def pane_expired(self, pane_start: int) -> bool:
        """No open window contains the pane any more: its profile can be dropped."""
        return not self.accepts(pane_start)
