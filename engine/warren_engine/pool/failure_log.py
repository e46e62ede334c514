"""The last failures of one pool's inputs, as its containers reported them.

A bounded ring: the newest ``LIMIT`` failed attempts (each with its traceback), and
counts of all of them since the pool started, reported or left out over a container's
report budget (see :mod:`warren_engine.container.failure_reports`). The dashboard shows
it; nothing else depends on it, so it is memory, not a record: it goes with its pool.

This module does no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from warren_engine.pipe.messages import Raised

LIMIT = 20


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """One failed attempt, as its container reported it, and that container."""

    container: str
    raised: Raised

    def as_dict(self) -> dict[str, object]:
        raised = self.raised
        return {
            "container": self.container,
            "time": raised.time,
            "call": raised.call,
            "index": raised.index,
            "attempt": raised.attempt,
            "retrying": raised.retrying,
            "type": raised.error_type,
            "message": raised.message,
            "traceback": raised.traceback,
        }


class FailureLog:
    def __init__(self, limit: int = LIMIT) -> None:
        self._recent: deque[FailedAttempt] = deque(maxlen=limit)
        self.total = 0  # failed attempts since the pool started, reported or not

    def add(self, container: str, raised: Raised) -> None:
        self.total += 1 + raised.unreported
        self._recent.append(FailedAttempt(container, raised))

    def recent(self) -> tuple[FailedAttempt, ...]:
        """The failures kept, newest first."""
        return tuple(reversed(self._recent))
