"""Which messages were running in a container when it died: the crash ledger.

RabbitMQ redelivers a message whose consumer went away, and flags it ``redelivered``
whatever the reason: a container that crashed (SIGKILL, out of memory, a segfault in
the function), but also a broker restart, a forced close of connections, or a
container stopping on purpose. Only crashes may count towards an input's crash limit
(a quorum queue's delivery limit would count them all, and dead-letter healthy inputs
during a broker fault), so each pool keeps this ledger: every container records the
messages it holds in its holding table (:mod:`warren_engine.pipe.holdings`), which the ledger
reads; the pool reports every container's exit; and a container that receives a
redelivered message asks whether its last holder crashed.

If the last holder is still alive when the question comes (the broker noticed its
death before the engine did, or its connection dropped), the answer waits a little
for that container's exit. A message that a container already replaced with copies
carrying the new crash count (it was acknowledged, but the container died before the
acknowledgement reached the broker) is answered ``REPLACED``: dropped, not run again.
No I/O of its own; the pool feeds it.
"""

from __future__ import annotations

import asyncio
import collections

from warren_engine.pipe.holdings import HoldingTable, key
from warren_engine.pipe.messages import CRASHED, HEALTHY, REPLACED

VERDICT_WAIT = 3.0
REMEMBERED = 100_000


class CrashLedger:
    def __init__(self, wait: float = VERDICT_WAIT) -> None:
        self._wait = wait
        self._tables: dict[int, HoldingTable] = {}
        self._victims: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._replaced: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._exits: dict[int, asyncio.Event] = {}

    def joined(self, container: int, table: HoldingTable) -> None:
        """A container started; ``table`` is where it records what it holds."""
        self._tables[container] = table

    def holding(self, container: int) -> int:
        table = self._tables.get(container)
        return len(table.held()) if table is not None else 0

    def exited(self, container: int, crashed: bool) -> None:
        """A container is gone; if it ``crashed``, what it held becomes a crash victim."""
        table = self._tables.pop(container, None)
        if crashed and table is not None:
            for held in table.held():
                self._victims[held] = None
            _bound(self._victims)
        self._wake(container)

    def dropped(self, container: int) -> None:
        """A container lost its broker connection: what it held is redelivered, not crashed.

        It cleared its table before saying so; verdicts waiting for it are answered now.
        """
        self._wake(container)

    def _wake(self, container: int) -> None:
        gone = self._exits.pop(container, None)
        if gone is not None:
            gone.set()  # wakes the verdicts waiting for this container

    def replaced(self, message_id: str) -> None:
        """A container put copies of this crashed message back: never run it again."""
        held = key(message_id)
        self._victims.pop(held, None)
        self._replaced[held] = None
        _bound(self._replaced)

    def _holder(self, held: bytes, asker: int) -> int | None:
        for container, table in self._tables.items():
            if container != asker and table.holds(held):
                return container
        return None

    async def verdict(self, message_id: str, asker: int) -> str:
        """``CRASHED`` if the last holder of ``message_id`` died with it, ``REPLACED`` if
        copies carrying the crash count stand for it already, else ``HEALTHY``."""
        held = key(message_id)
        if held in self._replaced:
            return REPLACED
        holder = None if held in self._victims else self._holder(held, asker)
        if holder is not None:
            gone = self._exits.setdefault(holder, asyncio.Event())
            try:
                await asyncio.wait_for(gone.wait(), self._wait)
            except TimeoutError:
                return HEALTHY  # alive: its connection dropped, it did not crash
        # Kept until the crash is recorded (``replaced``): if the container that heard
        # this verdict fails to requeue the message, the next one to get it is told too.
        return CRASHED if held in self._victims else HEALTHY


def _bound(remembered: collections.OrderedDict[bytes, None]) -> None:
    while len(remembered) > REMEMBERED:
        remembered.popitem(last=False)
