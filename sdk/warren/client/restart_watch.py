"""Telling a broker restart from a dropped connection, so that lost calls are sent again.

The calls a waiting caller owns (``remote`` and ``map``) travel as transient messages,
and so do their results: the broker keeps them in memory only, which spares it a
disk write per message. A broker restart loses them; a dropped connection does not
(unacknowledged messages go back to their queue, and the durable queues keep what
they hold). So the client leaves a *marker*, a transient message, in a durable queue
of its own, and looks for it after every reconnection: still there, the broker did
not restart and nothing was lost; gone, the broker restarted, and every call still
waiting is sent again. A call whose first copy survived somewhere (it was running in a
container that reconnected) then runs twice, and its second result is dropped.

The marker's queue expires like the client's result queue once the client is gone;
while the client lives it declares the queue again every so often, which keeps it.

In a cluster the marker's (classic) queue lives on one node. When that node is down the
broker refuses to declare it (404, "home node ... is down"): the marker is lost as in a
restart, and the client leaves a new one in a queue of a new name on a live node.

With quorum queues (``WARREN_QUEUE_TYPE=quorum``) there is no watch: calls and results
are on disk, replicated, and neither a restart nor a node's loss loses them; a watch
would take the loss of its marker's node for a restart and send every waiting call
again.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from warren.client.publisher import BROKER_ERRORS, TRANSIENT
from warren.wire import topology
from warren.wire.amqp import Connection, NotFound, Properties
from warren.wire.session import BrokerSession, temporary_channel

log = structlog.get_logger(__name__)

MARKER = b"warren-marker"


class RestartWatch:
    def __init__(self, session: BrokerSession, queue: str, expiry: float) -> None:
        self._session = session
        self._base = self._queue = queue
        self._moves = 0
        self._expiry = expiry
        self._keeper: asyncio.Task[None] | None = None

    async def mark(self, connection: Connection) -> None:
        """Leave the marker (one, whatever was there before)."""
        try:
            await self._leave_marker(connection)
        except NotFound:  # the queue's home node is down: a queue of another name
            self._moves += 1
            self._queue = f"{self._base}.{self._moves}"
            log.warning("marker_queue_moved", queue=self._queue)
            await self._leave_marker(connection)
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def _leave_marker(self, connection: Connection) -> None:
        async with temporary_channel(connection, confirm=True) as channel:
            await channel.declare_queue(
                self._queue, durable=True, arguments=topology.marker_queue_arguments(self._expiry)
            )
            await channel.purge_queue(self._queue)
            confirm = channel.publish(
                MARKER, routing_key=self._queue, properties=Properties(delivery_mode=TRANSIENT)
            )
            assert confirm is not None
            await confirm

    async def lost(self, connection: Connection) -> bool:
        """Whether the broker lost the marker (it restarted); it is left again if so."""
        async with temporary_channel(connection) as channel:
            try:
                declared = await channel.declare_queue(self._queue, passive=True)
            except NotFound:
                declared = None
        if declared is not None and declared.message_count:
            return False
        log.warning("broker_restart_detected", queue=self._queue)
        await self.mark(connection)
        return True

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)

    async def _keep(self) -> None:
        # Declaring a queue again counts as using it: its expiry starts over.
        arguments = topology.marker_queue_arguments(self._expiry)
        while True:
            await asyncio.sleep(self._expiry / 3)
            with contextlib.suppress(*BROKER_ERRORS):
                connection = await self._session.ready()
                async with temporary_channel(connection) as channel:
                    await channel.declare_queue(self._queue, durable=True, arguments=arguments)
