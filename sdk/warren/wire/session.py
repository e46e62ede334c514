"""A connection to RabbitMQ that comes back by itself, for clients and containers.

A :class:`BrokerSession` keeps one :class:`~warren.wire.amqp.Connection` open. After each
new connection it calls its owner's ``setup`` (open channels, declare what the
owner needs, start consumers), and only then is the session *ready*; when the
connection is lost it tells the owner's ``lost`` callbacks and connects again, at
once and then every ``RECONNECT_INTERVAL`` seconds, until it is closed. The owner
re-creates its state explicitly in ``setup``: nothing is restored behind its back,
so a queue that is gone stays gone and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

from warren.config import RECONNECT_INTERVAL
from warren.wire.amqp import (
    HEARTBEAT_SECONDS,
    BrokerError,
    Channel,
    Connection,
    ConnectionLost,
)
from warren.wire.broker_urls import BrokerUrls, open_connection

log = structlog.get_logger(__name__)

Setup = Callable[[Connection, bool], Awaitable[None]]


class BrokerSession:
    def __init__(
        self,
        url: str,
        name: str,
        setup: Setup,
        *,
        reconnect_interval: float = RECONNECT_INTERVAL,
        heartbeat: int = HEARTBEAT_SECONDS,
    ) -> None:
        self.url = url
        self.nodes = BrokerUrls.parse(url)  # several nodes, tried in turn
        self.name = name
        self._setup = setup
        self._interval = reconnect_interval
        self._heartbeat = heartbeat
        self._connection: Connection | None = None
        self._ready = asyncio.Event()
        self._closed = False
        self._keeper: asyncio.Task[None] | None = None
        self.lost_callbacks: list[Callable[[], None]] = []
        self.restored_callbacks: list[Callable[[], None]] = []

    @property
    def connection(self) -> Connection:
        """The connection as it is now (it may be lost by the time it is used)."""
        if self._connection is None or not self._ready.is_set():
            raise ConnectionLost("not connected to RabbitMQ")
        return self._connection

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        """Connect and set up the first time; raises what went wrong (nothing retried)."""
        self._connection = await self._connect(first=True)
        self._ready.set()
        self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def ready(self) -> Connection:
        """The connection, once it is up and set up (waits while it comes back)."""
        while True:
            if self._closed:
                raise ConnectionLost("the session is closed")
            await self._ready.wait()
            if self._connection is not None and self._connection.is_open:
                return self._connection
            self._ready.clear()

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()
        self._ready.set()  # whoever waits learns it is closed

    async def _connect(self, *, first: bool) -> Connection:
        connection = await open_connection(self.nodes, self.name, heartbeat=self._heartbeat)
        try:
            await self._setup(connection, first)
        except BaseException:
            # A node that answers but cannot set up (a queue's home gone with a dead
            # node, a node of the minority side) must not be the first tried again.
            self.nodes.pass_over()
            await connection.close()
            raise
        return connection

    async def _keep(self) -> None:
        while not self._closed:
            assert self._connection is not None
            await asyncio.shield(self._connection.closed)
            if self._closed:
                return
            self._ready.clear()
            for callback in self.lost_callbacks:
                callback()
            self._connection = await self._reconnect()
            self._ready.set()
            for callback in self.restored_callbacks:
                callback()

    async def _reconnect(self) -> Connection:
        # At once first (a connection the broker closed, or a network blip, is back in
        # milliseconds), then every interval (a broker restarting takes seconds).
        attempt = 0
        while True:
            if attempt:
                await asyncio.sleep(self._interval)
            attempt += 1
            try:
                connection = await self._connect(first=False)
            except (BrokerError, OSError, TimeoutError) as exc:
                log.info("broker_reconnect_failed", reason=f"{type(exc).__name__}: {exc}")
                continue
            log.info("broker_reconnected", name=self.name, attempts=attempt)
            return connection


@contextlib.asynccontextmanager
async def temporary_channel(
    connection: Connection, *, confirm: bool = False
) -> AsyncIterator[Channel]:
    """A channel for a short exchange, closed after (asking about something that does not
    exist closes the channel that asked)."""
    channel = await connection.channel(confirm=confirm)
    try:
        yield channel
    finally:
        await channel.close()
