"""How long a client waits for a broker that went away, and who is told when it gives up.

A robust connection comes back by itself; meanwhile calls simply wait. Past
``WARREN_RECONNECT_TIMEOUT`` seconds without the broker, the outage *gives up*: the
client fails every call still waiting with ``ConnectionError``, and so do the waits
wrapped in :meth:`Outage.unless_lost` (a spawned call's ``get``, for one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Outage:
    def __init__(self, timeout: float, give_up: Callable[[], Exception]) -> None:
        self._timeout = timeout
        self._give_up = give_up  # fails the client's calls; the error to raise elsewhere
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: set[asyncio.Future[None]] = set()

    def lost(self, *_: Any) -> None:
        """The connection is gone (a ``close_callbacks`` entry)."""
        if self._timer is None:
            log.warning("broker_connection_lost")
            self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)

    def restored(self, *_: Any) -> None:
        """The connection is back (a ``reconnect_callbacks`` entry)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            log.info("broker_connection_restored")

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        error = self._give_up()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)

    async def unless_lost(self, work: Awaitable[T]) -> T:
        """``await work``, unless the broker stays away too long: then ``ConnectionError``."""
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(gone)
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                gone.result()  # raises the ConnectionError
            return task.result()
        finally:
            self._waiters.discard(gone)
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
