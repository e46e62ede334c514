"""Reading what functions printed: an environment's log stream, from a point in time.

A :class:`LogReader` consumes the stream queue (:func:`warren.wire.naming.log_stream`)
on a channel of its own, from ``since`` (a Unix time; None: all that is kept), as
AMQP 0-9-1 consumes a stream: a prefetch, the ``x-stream-offset`` consumer argument,
and each delivery acknowledged. A stream finds a time to the chunk, not to the line,
so lines older than ``since`` are left out here too, and so are other apps' (``app`` is
an app's instance), other functions' and other calls' lines (``call``, an invocation
id). Each batch that has lines left goes to ``on_batch``, on the loop. Batches that do
not decode are skipped and counted.
Given the session its connection belongs to, the reader consumes again after each
reconnection, from a little before the last line it handed on (the stream kept what
was published meanwhile), and leaves out the lines it has handed on already.

::

    reader = LogReader(print_batch, app="my-app", since=time.time() - 600)
    await reader.start(client.session, "main")
    ...
    await reader.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import math
from collections.abc import Callable

from warren.exceptions import DeserializationError
from warren.wire import naming
from warren.wire.amqp import BrokerError, Channel, Connection, Delivery
from warren.wire.logs import LogBatch
from warren.wire.session import BrokerSession

PREFETCH = 200
# A resumed consumer starts this long before the newest line handed on: lines of other
# containers may have been written a little earlier and published a little later.
RESUME_SLACK_SECONDS = 5.0


class LogReader:
    """Lines of the log stream, filtered, handed to ``on_batch`` as they arrive."""

    def __init__(
        self,
        on_batch: Callable[[LogBatch], None],
        *,
        app: str | None = None,
        function: str | None = None,
        call: str | None = None,
        since: float | None = None,
    ) -> None:
        self._on_batch = on_batch
        self._app = app
        self._function = function
        self._call = call
        self._since = since
        self._channel: Channel | None = None
        self._last = 0.0
        self._session: BrokerSession | None = None
        self._environment = ""
        self._resuming: set[asyncio.Task[None]] = set()
        self._seen: dict[str, float] = {}  # by container: the time of its last line handed on
        self._closed = False
        self.malformed = 0

    async def start(self, session: BrokerSession, environment: str) -> None:
        """Consume the environment's stream (its engine declared it when an app started),
        and again after each reconnection of ``session``."""
        self._session, self._environment = session, environment
        await self._consume(await session.ready())
        session.restored_callbacks.append(self._restored)

    def _restored(self) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._resume())
        self._resuming.add(task)
        task.add_done_callback(self._resuming.discard)

    async def _resume(self) -> None:
        assert self._session is not None
        with contextlib.suppress(BrokerError, OSError):  # lost again: the next one resumes
            await self._consume(self._session.connection)

    async def _consume(self, connection: Connection) -> None:
        channel = self._channel = await connection.channel()
        offset: object = "first"
        start = self._since
        if self._seen:  # resuming: from a little before the newest line handed on
            start = max(self._seen.values()) - RESUME_SLACK_SECONDS
        if start is not None:
            offset = datetime.datetime.fromtimestamp(max(0, int(start)), datetime.UTC)
        await channel.qos(PREFETCH)
        await channel.consume(
            naming.log_stream(self._environment),
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
        self._closed = True
        if self._session is not None and self._restored in self._session.restored_callbacks:
            self._session.restored_callbacks.remove(self._restored)
        for task in list(self._resuming):
            task.cancel()
        await asyncio.gather(*self._resuming, return_exceptions=True)
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
        # A container's lines come in the order written: what is not after the last one
        # handed on came again, from a consumer resumed after a reconnection.
        after = self._seen.get(batch.container, -math.inf)
        since = -math.inf if self._since is None else self._since
        lines = tuple(
            line
            for line in batch.lines
            if line.time >= since
            and line.time > after
            and (self._call is None or line.call == self._call)
        )
        if self._call is not None and not lines and batch.container not in self._seen:
            return  # another call's container (a dropped mark of one that ran ours may be ours)
        if len(lines) != len(batch.lines):
            batch = dataclasses.replace(batch, lines=lines)
        if batch.lines:
            self._seen[batch.container] = batch.lines[-1].time
        if batch.lines or batch.dropped:
            self._on_batch(batch)
