"""The client's connection to the broker: publishing calls, receiving results.

One :class:`Client` per event loop. It owns a connection that comes back by itself
(:mod:`warren.wire.session`, on Warren's AMQP driver) with two channels: one publishes
(publisher confirms, ``mandatory=True``: a call to a queue that does not exist comes
back as ``NotFoundError`` at once instead of vanishing), the other consumes the client's
own result queue (results acknowledged in bulk). Every message is signed on the way out
and verified on the way in (:mod:`warren.wire.signing`).

When the broker goes away (a restart, a forced close) the connection comes back by
itself and re-subscribes; a publish that fails meanwhile waits for it and is sent
again (a call may then arrive twice; its second result is dropped). The calls a
caller waits for are transient messages: if the broker restarted and lost them
(:mod:`warren.client.restart_watch` tells), every one still waiting is sent again. Calls still
waiting when the broker has been gone for ``WARREN_RECONNECT_TIMEOUT`` seconds fail
with ``ConnectionError`` rather than wait forever. Results are routed by invocation
id to a *sink* (a function's call stream, :mod:`warren.client.call_stream`, or a map's buffer), in
the manner of aio-pika's ``patterns/rpc.py``; engine control requests use the same
queue.

Blocking code and ``.aio`` code share nothing: :meth:`Client.current` returns the
client bound to the running loop, creating it on first use. A client made for a
user's loop is closed when that loop shuts down (``asyncio.run`` returning), through
an async generator the loop finalises; the loop thread's client is closed at exit.
Services that want to own the connection use ``async with Client.connect(url):``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Generator
from typing import Any, Protocol, TypeVar

import structlog

from warren import exceptions
from warren.client.batch_sizer import BatchSizer
from warren.client.call_stream import CallStream
from warren.client.facade import in_loop_thread, loop_thread
from warren.client.invocation import Target
from warren.client.outage import Outage
from warren.client.publisher import BROKER_ERRORS, TRANSIENT, Publisher
from warren.client.restart_watch import RestartWatch
from warren.config import Settings, redacted_url, settings
from warren.exceptions import EngineError, EngineNotFoundError, NotFoundError
from warren.wire import naming, topology
from warren.wire.acks import AckBatcher
from warren.wire.amqp import Channel, Connection, Delivery, NotFound, Properties
from warren.wire.control import Request, decode_reply, encode_request, reply_type
from warren.wire.protocol import (
    KIND_CANCEL,
    KIND_CONTROL_REPLY,
    KIND_RESULTS,
    Cancel,
    ResultBatch,
)
from warren.wire.session import BrokerSession, temporary_channel
from warren.wire.signing import CONTROL_MAX_SIZE, signer

log = structlog.get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# Results are acknowledged in bulk (every 64, or 20 ms after the last): room for both.
RESULT_PREFETCH = 256


class ResultSink(Protocol):
    """Where the results of one invocation go."""

    def deliver(self, index: int, status: int, fmt: int, data: bytes, duration: float) -> bool:
        """Take one result; False if it is a duplicate (its caller has its result)."""
        ...

    def fail(self, exc: BaseException) -> None: ...

    def resend(self) -> None:
        """The broker restarted: publish again every input still waiting for its result."""


_current: contextvars.ContextVar[Client | None] = contextvars.ContextVar(
    "warren_client", default=None
)
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[Client]] = (
    weakref.WeakKeyDictionary()
)


class Client:
    """A connection to RabbitMQ bound to one event loop."""

    def __init__(self, config: Settings | None = None) -> None:
        self.settings = config or settings()
        self.client_id = uuid.uuid4().hex[:20]
        self.environment = self.settings.environment
        self.result_queue = naming.result_queue(self.environment, self.client_id)
        self.signer = signer(self.settings)
        self.duplicates_dropped = 0
        self.messages_rejected = 0
        self._session: BrokerSession | None = None
        self._publisher: Publisher | None = None
        self._acks = AckBatcher()
        self._restarts: RestartWatch | None = None
        self._lease: str | None = None
        self._sinks: dict[str, ResultSink] = {}
        self._streams: dict[tuple[str, bool], CallStream] = {}
        self._sizers: dict[str, BatchSizer] = {}
        # Control replies waited for, by correlation id: their bodies, decoded by the waiter.
        self._control: dict[str, asyncio.Future[bytes]] = {}
        self._closed = False
        self._lifetime: AsyncIterator[None] | None = None
        self._outage = Outage(self.settings.reconnect_timeout, self._give_up)

    # -- life cycle ---------------------------------------------------------------

    @classmethod
    def connect(cls, url: str | None = None, *, environment: str | None = None) -> _Connecting:
        """Open a client explicitly; use as ``async with Client.connect(url) as client:``.

        Inside the block, function calls made on this task use this client.
        """
        base = settings()
        config = dataclasses.replace(
            base,
            broker_url=url or base.broker_url,
            environment=naming.check_part("environment", environment or base.environment),
        )
        return _Connecting(cls(config))

    async def open(self) -> Client:
        self._session = BrokerSession(self.settings.broker_url, self.client_id, self._setup)
        self._publisher = Publisher(
            self._session, self.signer, self.settings.reconnect_timeout, self.result_queue
        )
        if self.settings.queue_type != topology.QUORUM:
            # With quorum queues, calls and results are on disk and replicated: neither a
            # broker restart nor a node's loss loses them, and nothing is sent again.
            self._restarts = RestartWatch(
                self._session,
                naming.marker_queue(self.environment, self.client_id),
                self.settings.result_queue_expiry,
            )
        try:
            await self._session.start()
        except (*BROKER_ERRORS, TimeoutError) as exc:
            raise exceptions.ConnectionError(
                f"cannot connect to RabbitMQ at {redacted_url(self.settings.broker_url)}: {exc}"
            ) from exc
        self._session.lost_callbacks.append(self._outage.lost)
        self._session.restored_callbacks.append(self._outage.restored)
        log.debug("client_connected", client=self.client_id)
        return self

    async def _setup(self, connection: Connection, first: bool) -> None:
        """After each (re)connection: the result queue and its consumer, the publishing
        channel, the lease if one is held; and whether the broker restarted meanwhile."""
        assert self._publisher is not None
        self._publisher.attach(await connection.channel(confirm=True))
        consumer = await connection.channel()
        await consumer.declare_exchange(naming.replies_exchange(), "direct")
        await consumer.declare_queue(
            self.result_queue,
            durable=True,
            arguments=topology.result_queue_arguments(
                self.settings.result_queue_expiry, self.settings.queue_type, self.environment
            ),
        )
        await consumer.bind_queue(self.result_queue, naming.replies_exchange(), self.result_queue)
        await consumer.qos(RESULT_PREFETCH)
        await consumer.consume(self.result_queue, self._on_delivery)
        if self._lease is not None:
            await consumer.declare_queue(self._lease, exclusive=True)
        if self._restarts is None:
            return
        if first:
            await self._restarts.mark(connection)
        elif await self._restarts.lost(connection):
            self._broker_restarted()

    def _give_up(self) -> Exception:
        error = exceptions.ConnectionError(
            f"lost the broker at {redacted_url(self.settings.broker_url)} for "
            f"{self.settings.reconnect_timeout:g}s (WARREN_RECONNECT_TIMEOUT)"
        )
        self._fail_waiting(error)
        return error

    async def unless_broker_lost(self, work: Awaitable[T]) -> T:
        """``await work``, unless the broker stays away past ``WARREN_RECONNECT_TIMEOUT``:
        then ``ConnectionError`` (for waits that are not a call's, like ``get``)."""
        return await self._outage.unless_lost(work)

    def _broker_restarted(self) -> None:
        for sink in list(self._sinks.values()):
            sink.resend()

    def _fail_waiting(self, error: Exception) -> None:
        for sink in list(self._sinks.values()):
            sink.fail(error)
        for waiter in self._control.values():
            if not waiter.done():
                waiter.set_exception(error)

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._outage.cancel()
        self._fail_waiting(
            exceptions.ConnectionError("the client was closed while the call was waiting")
        )
        if self._session is not None:
            self._session.lost_callbacks.clear()  # closing is not an outage
        for stream in list(self._streams.values()):
            await stream.close()
        if self._restarts is not None:
            await self._restarts.close()
        self._acks.flush()
        if self._session is not None:
            await self._session.close()
        log.debug(
            "client_closed",
            client=self.client_id,
            duplicates_dropped=self.duplicates_dropped,
            messages_rejected=self.messages_rejected,
        )

    @classmethod
    async def current(cls) -> Client:
        """The client for the running loop (or the one opened explicitly in this context)."""
        explicit = _current.get()
        if explicit is not None and not explicit.closed:
            return explicit
        loop = asyncio.get_running_loop()
        task = _by_loop.get(loop)
        if task is not None and task.done() and not task.cancelled() and not task.exception():
            client = task.result()
            if not client.closed:
                return client  # the common case: no future, no callback per call
        if task is None or task.done():  # never opened, or failed, or closed since
            task = loop.create_task(cls._open_for_loop())
            _by_loop[loop] = task
        try:
            return await asyncio.shield(task)
        except BaseException:
            if task.done() and _by_loop.get(loop) is task:
                del _by_loop[loop]
            raise

    @classmethod
    async def _open_for_loop(cls) -> Client:
        client = await cls().open()
        if in_loop_thread():
            loop_thread().add_closer(client.close)
        else:
            client._lifetime = _close_when_loop_ends(client)
            await client._lifetime.__anext__()
        return client

    # -- publishing ---------------------------------------------------------------

    @property
    def publisher(self) -> Publisher:
        assert self._publisher is not None, "client is not open"
        return self._publisher

    async def hold_lease(self) -> str:
        """Declare this client's lease queue: exclusive, so it exists while we are connected
        (declared again after each reconnection)."""
        name = naming.lease_queue(self.environment, self.client_id)
        connection = await self.session.ready()
        async with temporary_channel(connection) as channel:
            await channel.declare_queue(name, exclusive=True)
        self._lease = name
        return name

    @property
    def session(self) -> BrokerSession:
        assert self._session is not None, "client is not open"
        return self._session

    @contextlib.asynccontextmanager
    async def channel(self) -> AsyncIterator[Channel]:
        """A fresh channel for a short exchange (``async with client.channel() as ch:``)."""
        connection = await self.session.ready()
        async with temporary_channel(connection) as channel:
            yield channel

    async def broadcast(self, exchange: str, message: Cancel) -> None:
        """Publish to a fanout exchange the engine declared; nothing to do if it has not.

        A channel of its own: a missing exchange closes the channel that named it, and a
        client has no right to declare the exchange (see ``broker_config``).
        """
        try:
            async with self.channel() as channel:
                await channel.declare_exchange(exchange, "fanout", passive=True)
                channel.publish(
                    self.signer.seal(message.to_envelope()),
                    exchange=exchange,
                    properties=Properties(message_type=KIND_CANCEL, delivery_mode=TRANSIENT),
                )
        except NotFound:
            pass  # no engine ever ran in this environment: no container holds these inputs
        except BROKER_ERRORS as exc:  # the broker is away: containers skip nothing, no harm
            log.warning("cancel_not_published", reason=f"{type(exc).__name__}: {exc}")

    async def control(
        self, request: Request[R], *, queue: str | None = None, timeout: float = 60.0
    ) -> R:
        """Send a request to an engine and wait for its reply (raises what the engine raised)::

        listing = await client.control(ListApps(environment="main"))
        """
        correlation_id = uuid.uuid4().hex
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._control[correlation_id] = waiter
        target = queue or naming.control_queue(request.scope or self.environment)
        try:
            try:
                await self.publisher.publish(
                    target,
                    encode_request(request),
                    correlation_id=correlation_id,
                    persistent=False,
                    max_size=CONTROL_MAX_SIZE,
                )
            except NotFoundError:
                raise EngineNotFoundError(
                    f"no engine is listening on {target!r}: start one with `warren engine`"
                ) from None
            body = await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise EngineError(
                f"the engine did not answer {request.OP!r} within {timeout:g}s"
            ) from None
        finally:
            self._control.pop(correlation_id, None)
        return decode_reply(body, reply_type(request))

    # -- calls ----------------------------------------------------------------------

    def sizer(self, queue: str) -> BatchSizer:
        """The batch sizer of one function (queue): what this client learned of its run time."""
        sizer = self._sizers.get(queue)
        if sizer is None:
            sizer = self._sizers[queue] = BatchSizer()
        return sizer

    def stream(self, target: Target, json: bool = False) -> CallStream:
        """This client's call stream to the target's queue (``json``: for web endpoints)."""
        key = (target.queue, json)
        stream = self._streams.get(key)
        if stream is None:
            stream = CallStream(self, target, json, self.sizer(target.queue))
            self._streams[key] = stream
        return stream

    # -- results ------------------------------------------------------------------

    def add_sink(self, invocation_id: str, sink: ResultSink) -> None:
        self._sinks[invocation_id] = sink

    def remove_sink(self, invocation_id: str) -> None:
        self._sinks.pop(invocation_id, None)

    def _on_delivery(self, delivery: Delivery) -> None:
        properties = delivery.properties
        try:
            envelope = self.signer.open(
                delivery.body,
                max_size=CONTROL_MAX_SIZE,
                reply_to=properties.reply_to,
                correlation_id=properties.correlation_id,
            )
            if envelope.kind == KIND_RESULTS:
                self._route_results(ResultBatch.from_body(envelope.body))
            elif envelope.kind == KIND_CONTROL_REPLY:
                waiter = self._control.get(properties.correlation_id or "")
                if waiter is not None and not waiter.done():
                    waiter.set_result(envelope.body)
            else:
                log.warning("message_ignored", kind=envelope.kind, queue=self.result_queue)
        except (exceptions.WarrenError, ValueError, TypeError) as exc:
            # Never unpickled, never routed: dropped, with the reason logged.
            self.messages_rejected += 1
            log.warning("message_rejected", reason=str(exc), queue=self.result_queue)
        finally:
            # Lost with the connection before it is acknowledged: it comes again, and its
            # results are dropped as duplicates.
            self._acks.handled(delivery)

    def _route_results(self, batch: ResultBatch) -> None:
        sinks = self._sinks
        for invocation_id, index, status, fmt, data, duration in batch.items:
            sink = sinks.get(invocation_id)
            # Late or duplicate (a redelivered input ran twice): its caller is gone or served.
            if sink is None or not sink.deliver(index, status, fmt, data, duration):
                self.duplicates_dropped += 1


class _Connecting:
    """``async with Client.connect(...)`` (also awaitable, for callers that close it themselves)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._token: contextvars.Token[Client | None] | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._client.open().__await__()

    async def __aenter__(self) -> Client:
        await self._client.open()
        self._token = _current.set(self._client)
        return self._client

    async def __aexit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _current.reset(self._token)
        await self._client.close()


async def _close_when_loop_ends(client: Client) -> AsyncIterator[None]:
    # The loop's shutdown_asyncgens() (run by asyncio.run and asyncio.Runner while the
    # loop still runs) finalises this generator, so the connection closes cleanly.
    try:
        yield
    finally:
        await client.close()
