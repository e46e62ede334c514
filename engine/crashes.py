"""Which messages were running in a container when it died: the crash ledger.

RabbitMQ redelivers a message whose consumer went away, and flags it ``redelivered``
whatever the reason: a container that crashed (SIGKILL, out of memory, a segfault in
the function), but also a broker restart, a forced close of connections, or a
container stopping on purpose. Only crashes may count towards an input's crash limit
(a quorum queue's delivery limit would count them all, and dead-letter healthy inputs
during a broker fault), so each pool keeps this ledger: containers report every
message they take and settle, the pool reports every container's exit, and a
container that receives a redelivered message asks whether its last holder crashed.

If the last holder is still alive when the question comes (the broker noticed its
death before the engine did, or its connection dropped), the answer waits a little
for that container's exit. A message that a container already replaced with copies
carrying the new crash count (it was acknowledged, but the container died before the
acknowledgement reached the broker) is answered ``REPLACED``: dropped, not run again.
No I/O; the pool feeds it.
"""

from __future__ import annotations

import asyncio
import collections

VERDICT_WAIT = 3.0
REMEMBERED = 100_000

HEALTHY = "healthy"
CRASHED = "crashed"
REPLACED = "replaced"


class CrashLedger:
    def __init__(self, wait: float = VERDICT_WAIT) -> None:
        self._wait = wait
        self._holder: dict[str, int] = {}
        self._held: dict[int, set[str]] = {}
        self._victims: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._replaced: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._exits: dict[int, asyncio.Event] = {}

    def took(self, container: int, message_id: str) -> None:
        self._holder[message_id] = container
        self._held.setdefault(container, set()).add(message_id)

    def released(self, container: int, message_id: str) -> None:
        if self._holder.get(message_id) == container:
            del self._holder[message_id]
        self._held.get(container, set()).discard(message_id)

    def holding(self, container: int) -> int:
        return len(self._held.get(container, ()))

    def exited(self, container: int, crashed: bool) -> None:
        """A container is gone; if it ``crashed``, what it held becomes a crash victim."""
        for message_id in self._held.pop(container, set()):
            if self._holder.get(message_id) == container:
                del self._holder[message_id]
            if crashed:
                self._victims[message_id] = None
        _bound(self._victims)
        gone = self._exits.pop(container, None)
        if gone is not None:
            gone.set()  # wakes the verdicts waiting for this container

    def dropped(self, container: int) -> None:
        """A container lost its broker connection: what it held is redelivered, not crashed."""
        self.exited(container, crashed=False)

    def replaced(self, message_id: str) -> None:
        """A container put copies of this crashed message back: never run it again."""
        self._victims.pop(message_id, None)
        self._replaced[message_id] = None
        _bound(self._replaced)

    async def verdict(self, message_id: str, asker: int) -> str:
        """``CRASHED`` if the last holder of ``message_id`` died with it, ``REPLACED`` if
        copies carrying the crash count stand for it already, else ``HEALTHY``."""
        if message_id in self._replaced:
            return REPLACED
        holder = self._holder.get(message_id)
        if message_id not in self._victims and holder is not None and holder != asker:
            gone = self._exits.setdefault(holder, asyncio.Event())
            try:
                await asyncio.wait_for(gone.wait(), self._wait)
            except TimeoutError:
                return HEALTHY  # alive: its connection dropped, it did not crash
        # Kept until the crash is recorded (``replaced``): if the container that heard
        # this verdict fails to requeue the message, the next one to get it is told too.
        return CRASHED if message_id in self._victims else HEALTHY


def _bound(remembered: collections.OrderedDict[str, None]) -> None:
    while len(remembered) > REMEMBERED:
        remembered.popitem(last=False)
