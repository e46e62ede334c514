"""What the engine remembers of cancelled invocations, for containers it starts later.

Containers learn of cancels from a fanout broadcast, which a container started
afterwards never sees: one that replaces a container stopped to cancel a sync input,
say, would otherwise run the cancelled input again when it is redelivered. The engine
listens to the same broadcast and hands the recent ids to every new container.
"""

from __future__ import annotations

import collections
import time

KEEP_SECONDS = 24 * 3600.0
KEEP_AT_MOST = 100_000
HANDED_TO_A_CONTAINER = 10_000


class CancelMemory:
    def __init__(
        self, keep_seconds: float = KEEP_SECONDS, keep_at_most: int = KEEP_AT_MOST
    ) -> None:
        self._keep_seconds = keep_seconds
        self._keep_at_most = keep_at_most
        self._ids: collections.OrderedDict[str, float] = collections.OrderedDict()

    def add(self, invocation_ids: list[str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for invocation_id in invocation_ids:
            self._ids[invocation_id] = now
            self._ids.move_to_end(invocation_id)
        self._forget(now)

    def recent(self, limit: int = HANDED_TO_A_CONTAINER, now: float | None = None) -> list[str]:
        """The most recent ids, newest last."""
        self._forget(time.monotonic() if now is None else now)
        ids = list(self._ids)
        return ids[-limit:]

    def _forget(self, now: float) -> None:
        while self._ids and (
            len(self._ids) > self._keep_at_most
            or next(iter(self._ids.values())) < now - self._keep_seconds
        ):
            self._ids.popitem(last=False)
