"""Noticing a consumer that stays out of its group.

librdkafka has had bugs where a consumer whose group coordinator went away keeps
re-trying to join and never gets back in, even with the broker up again (e.g.
confluentinc/librdkafka#2944, #3082); the cure users report is a restart. A worker
must not sit there idle with ``/health`` at 503, so it watches the group state in the
consumer's statistics and, when the consumer has been out of its group for longer than
`limit_s` while the broker answers, replaces it (see `Worker._replace_consumer`).

>>> watch = GroupWatch(limit_s=60)
>>> watch.observe({"state": "up", "join_state": "wait-join"}, now=0.0)
>>> watch.overdue(now=30.0), watch.overdue(now=61.0)
(False, True)
>>> watch.observe({"state": "up", "join_state": "steady"}, now=62.0)
>>> watch.overdue(now=500.0)
False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class GroupWatch:
    limit_s: float
    out_since_: float | None = None  # monotonic time the consumer was first seen out

    def observe(self, cgrp: Mapping[str, Any], now: float) -> None:
        """Feed the ``cgrp`` object of a librdkafka statistics report."""
        joined = cgrp.get("state") == "up" and cgrp.get("join_state") == "steady"
        if joined:
            self.out_since_ = None
        elif self.out_since_ is None:
            self.out_since_ = now

    def overdue(self, now: float) -> bool:
        return self.out_since_ is not None and now - self.out_since_ > self.limit_s

    def reset(self) -> None:
        self.out_since_ = None

    def out_for(self, now: float) -> float:
        return 0.0 if self.out_since_ is None else now - self.out_since_
