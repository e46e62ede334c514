"""Reading what functions printed: an environment's log stream, from a point in time.

A :class:`LogReader` consumes the stream queue (:func:`warren.wire.naming.log_stream`)
on a channel of its own, from ``since`` (a Unix time; None: all that is kept), as
AMQP 0-9-1 consumes a stream: a prefetch, the ``x-stream-offset`` consumer argument,
and each delivery acknowledged. A stream finds a time to the chunk, not to the line,
so lines older than ``since`` are left out here too, and so are other apps' (``app`` is
an app's instance) and other functions' lines. Each batch that has lines left goes to
``on_batch``, on the loop. Batches that do not decode are skipped and counted.

::

    reader = LogReader(print_batch, app="my-app", since=time.time() - 600)
    await reader.start(connection, "main")
    ...
    await reader.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
from collections.abc import Callable

from warren.exceptions import DeserializationError
from warren.wire import naming
from warren.wire.amqp import BrokerError, Channel, Connection, Delivery
from warren.wire.logs import LogBatch

PREFETCH = 200


class LogReader:
    """Lines of the log stream, filtered, handed to ``on_batch`` as they arrive."""

    def __init__(
        self,
        on_batch: Callable[[LogBatch], None],
        *,
        app: str | None = None,
        function: str | None = None,
        since: float | None = None,
    ) -> None:
        self._on_batch = on_batch
        self._app = app
        self._function = function
        self._since = since
        self._channel: Channel | None = None
        self._last = 0.0
        self.malformed = 0

    async def start(self, connection: Connection, environment: str) -> None:
        """Consume the environment's stream (its engine declared it when an app started)."""
        channel = self._channel = await connection.channel()
        offset: object = "first"
        if self._since is not None:
            offset = datetime.datetime.fromtimestamp(int(self._since), datetime.UTC)
        await channel.qos(PREFETCH)
        await channel.consume(
            naming.log_stream(environment),
            self._on_delivery,
            arguments={"x-stream-offset": offset},
        )
        self._last = asyncio.get_running_loop().time()

    async def quiet(self, idle: float, limit: float) -> None:
        """Wait until nothing arrived for ``idle`` seconds from now (``limit`` at most)."""
        loop = asyncio.get_running_loop()
        called = loop.time()
        deadline = called + limit
        while (now := loop.time()) < deadline and now - max(self._last, called) < idle:
            await asyncio.sleep(min(idle - (now - max(self._last, called)), deadline - now))

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(BrokerError, OSError):
                await self._channel.close()

    def _on_delivery(self, delivery: Delivery) -> None:
        self._last = asyncio.get_running_loop().time()
        delivery.channel.ack(delivery.delivery_tag, lazy=True)
        try:
            batch = LogBatch.from_body(delivery.body)
        except DeserializationError:
            self.malformed += 1
            return
        if self._app is not None and batch.app != self._app:
            return
        if self._function is not None and batch.function != self._function:
            return
        if self._since is not None:
            since = self._since
            lines = tuple(line for line in batch.lines if line.time >= since)
            if len(lines) != len(batch.lines):
                batch = dataclasses.replace(batch, lines=lines)
        if batch.lines or batch.dropped:
            self._on_batch(batch)
