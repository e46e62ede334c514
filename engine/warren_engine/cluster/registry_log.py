"""Where an environment's registry lives: a RabbitMQ stream every engine node reads.

The stream ``warren.v1.<env>.registry`` keeps the entries of
:mod:`warren_engine.cluster.entries` in the order the broker took them. A stream is
replicated over a RabbitMQ cluster's nodes and kept on disk, so the registry survives
the loss of any engine node, and of a broker node in a cluster; several readers read it
without taking anything off it. Each engine node reads it from its start and applies
every entry, one at a time, in that order; a node that appends an entry (it took a
deploy, say) waits until its own reading reaches it, so that it answers its caller with
the change applied here as everywhere.

When a node starts it appends a ``Synced`` entry and reads up to it before it takes
requests: then it knows every app that was deployed before it started. The entries it
reads before that are only folded into the latest state of each app, so a restart does
not replay every redeploy of the day.

An engine started for one ``app.run()`` keeps its registry in memory
(:class:`MemoryLog`): nobody else runs its apps, and nothing of it must outlive it.

The stream keeps every entry (no retention): entries are small but for the code a
deploy ships, and a deploy is rare next to calls. An operator may delete the stream of
an environment whose apps are all stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from warren import exceptions
from warren.wire import naming
from warren.wire.signing import Signer
from warren_engine.cluster.entries import KIND_REGISTRY, Entry, Synced, decode_entry, encode_entry

log = structlog.get_logger(__name__)

# Entries stay valid as long as the stream keeps them: code travels signed, and a node
# restarted a year later must still read the apps deployed before.
ENTRY_VALIDITY = 100 * 365 * 24 * 3600.0
ENTRY_MAX_SIZE = 256 * 1024 * 1024
PREFETCH = 64
APPLY_TIMEOUT = 600.0  # applying one entry may start pools, whose containers import

Apply = Callable[[Entry, bool], Awaitable[None]]
"""Applies one entry: (entry, live). ``live`` is False while catching up at start."""


class Log(Protocol):
    """An environment's registry: append an entry and wait until it is applied here."""

    async def start(self, apply: Apply) -> None: ...

    async def append(self, entry: Entry) -> None: ...

    async def close(self) -> None: ...


def entry_id() -> str:
    return uuid.uuid4().hex


class MemoryLog:
    """The registry of an engine with no peers: entries are applied as they come."""

    def __init__(self) -> None:
        self._apply: Apply | None = None
        self._lock = asyncio.Lock()

    async def start(self, apply: Apply) -> None:
        self._apply = apply

    async def append(self, entry: Entry) -> None:
        assert self._apply is not None, "start() first"
        async with self._lock:  # in order, one at a time, as a stream reader would
            await self._apply(entry, True)

    async def close(self) -> None:
        pass


class StreamLog:
    """The registry of one environment in its stream, for one engine node."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        publisher: AbstractRobustChannel,
        signer: Signer,
        environment: str,
        node: str,
    ) -> None:
        self._connection = connection
        self._publisher = publisher  # with publisher confirms
        self._signer = signer
        self.environment = environment
        self.name = naming.registry_stream(environment)
        self._node = node
        self._apply: Apply | None = None
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._live = False
        self._caught_up = asyncio.Event()
        self._synced_id = ""
        self._offset = -1  # of the last entry applied
        self._reader: asyncio.Task[None] | None = None

    async def start(self, apply: Apply) -> None:
        """Declare the stream, read it up to now (folding), then follow it."""
        self._apply = apply
        channel = await self._connection.channel()
        try:
            await declare_registry(channel, self.environment)
        finally:
            await channel.close()
        self._synced_id = entry_id()
        await self._publish(Synced(self._synced_id, self._node))
        self._reader = asyncio.create_task(self._read_forever(), name=f"registry-{self.name}")
        waiter = asyncio.ensure_future(self._caught_up.wait())
        done, _ = await asyncio.wait({waiter, self._reader}, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            await self._reader  # raises what stopped it
        log.info("registry_read", environment=self.environment, offset=self._offset)

    async def append(self, entry: Entry) -> None:
        """Append ``entry`` and wait until this node has applied it (raises what applying
        it raised here)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[entry.entry_id] = waiter
        try:
            await self._publish(entry)
            await asyncio.wait_for(waiter, APPLY_TIMEOUT)
        except TimeoutError:
            raise exceptions.EngineError(
                f"the registry of {self.environment!r} did not come back with the change "
                f"within {APPLY_TIMEOUT:g}s"
            ) from None
        finally:
            self._waiting.pop(entry.entry_id, None)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def _publish(self, entry: Entry) -> None:
        body = self._signer.seal(encode_entry(entry), valid_for=ENTRY_VALIDITY)
        await self._publisher.default_exchange.publish(
            aio_pika.Message(
                body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, type=KIND_REGISTRY
            ),
            routing_key=self.name,
            mandatory=True,
        )

    async def _read_forever(self) -> None:
        """Read from where this node has got to; again after the connection comes back."""
        while True:
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection went: read on where we were
                log.warning("registry_reading_again", environment=self.environment, reason=str(exc))
                await asyncio.sleep(1.0)

    async def _read(self) -> None:
        channel = await self._connection.channel()
        try:
            await channel.set_qos(prefetch_count=PREFETCH)
            queue = await declare_registry(channel, self.environment)
            start: Any = "first" if self._offset < 0 else self._offset + 1
            async with queue.iterator(arguments={"x-stream-offset": start}) as messages:
                async for message in messages:
                    await self._take(message)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _take(self, message: AbstractIncomingMessage) -> None:
        offset = message.headers.get("x-stream-offset")
        if isinstance(offset, int) and offset <= self._offset:
            await message.ack()
            return  # read already, before a reconnection
        try:
            envelope = self._signer.open_message(
                message, max_size=ENTRY_MAX_SIZE, kind=KIND_REGISTRY
            )
            entry = decode_entry(envelope.body)
        except exceptions.WarrenError as exc:
            log.error("registry_entry_skipped", environment=self.environment, reason=str(exc))
        else:
            await self._apply_entry(entry)
        if isinstance(offset, int):
            self._offset = offset
        await message.ack()

    async def _apply_entry(self, entry: Entry) -> None:
        assert self._apply is not None
        if isinstance(entry, Synced):
            if entry.entry_id == self._synced_id and not self._live:
                self._live = True
                await self._apply(entry, True)  # the state folded so far: start it
                self._caught_up.set()
            return
        waiter = self._waiting.get(entry.entry_id)
        try:
            await self._apply(entry, self._live)
        except Exception as exc:
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
            else:
                log.exception("registry_entry_failed", environment=self.environment)
            return
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def declare_registry(channel: aio_pika.abc.AbstractChannel, environment: str) -> Any:
    return await channel.declare_queue(
        naming.registry_stream(environment),
        durable=True,
        arguments={"x-queue-type": "stream"},
    )
