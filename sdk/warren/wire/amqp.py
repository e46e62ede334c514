"""A lean AMQP 0-9-1 connection: what clients and containers say to RabbitMQ per call.

aio-pika, on aiormq, hands every frame through queues and tasks: on this hardware a
bare request/reply turns the event loop about fourteen times and costs a third of a
millisecond of CPU on each side. This driver parses frames as they arrive, in the
protocol's ``data_received``, and calls back at once: measured side by side it halves
both the latency and the CPU of a request/reply (``benchmarks/README.md``). Frames are
encoded and decoded by pamqp, the codec aiormq itself uses; what is here is the
protocol's state:

* the handshake (PLAIN, over TCP or TLS for ``amqps://``), the tuning and heartbeats;
* channels, whose synchronous methods are answered in order, matched to their replies;
* publishing, with publisher confirms and ``mandatory`` returns;
* consumers and deliveries, and ``basic.get``;
* errors: a channel the broker closes fails what waits on it with
  :class:`ChannelClosed` (:class:`NotFound` for a queue or exchange that does not
  exist, ...); a lost or closed connection fails everything with :class:`ConnectionLost`.

Reconnecting is not done here: :mod:`warren.wire.session` keeps a connection up and lets its
owner declare what it needs after each new one. Callbacks (a consumer's, a channel's
close) run inside ``data_received``: they must not block, and start a task to await.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from pamqp import commands as spec
from pamqp import frame as codec
from pamqp import heartbeat
from pamqp.base import Frame
from pamqp.exceptions import PAMQPException

from warren.wire import frames
from warren.wire.frames import Properties as Properties

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
FRAME_OVERHEAD = 8
HEARTBEAT_SECONDS = 60
# For the connections of engine nodes and containers, which hold inputs and slots: the
# broker closes a silent connection after two to three heartbeats, and only then
# requeues what it held for others. A node cut off from the broker (a partition, not a
# crash: nothing closes its TCP connections) so gives its work back within 10-15 s,
# rather than 2-3 minutes, and notices itself within 10 s. RabbitMQ advises against less
# than 5 s (false positives on a loaded machine).
NODE_HEARTBEAT_SECONDS = 5
LAZY_SECONDS = 0.005
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
_FRAME_HEAD = struct.Struct(">BHI")

_CHANNEL_CLOSE = spec.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)


class BrokerError(Exception):
    """Something the broker or the connection to it did."""


class ConnectionLost(BrokerError):
    """The connection is gone (closed by the broker, by the network, or by us)."""


class ChannelClosed(BrokerError):
    """The broker closed a channel, with an AMQP reply code and text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


class AccessRefused(ChannelClosed):
    """403: the user may not do this."""


class NotFound(ChannelClosed):
    """404: no queue or exchange of that name."""


class ResourceLocked(ChannelClosed):
    """405: an exclusive queue that another connection holds."""


class PreconditionFailed(ChannelClosed):
    """406: a queue declared again with other arguments, an unknown delivery tag..."""


class Returned(BrokerError):
    """A ``mandatory`` message that no queue took."""

    def __init__(self, code: int, text: str, routing_key: str) -> None:
        super().__init__(f"{code} {text}: {routing_key!r}")
        self.routing_key = routing_key


class Nacked(BrokerError):
    """The broker could not take a published message (a confirm came back negative)."""


_CHANNEL_ERRORS: dict[int, type[ChannelClosed]] = {
    403: AccessRefused,
    404: NotFound,
    405: ResourceLocked,
    406: PreconditionFailed,
}


def channel_error(code: int, text: str) -> ChannelClosed:
    return _CHANNEL_ERRORS.get(code, ChannelClosed)(code, text)


@dataclass(slots=True, eq=False)
class Delivery:
    """A message from the broker: delivered to a consumer, got, or returned."""

    channel: Channel
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: Properties
    body: bytes
    consumer_tag: str = ""

    @property
    def message_id(self) -> str | None:
        return self.properties.message_id

    @property
    def correlation_id(self) -> str | None:
        return self.properties.correlation_id

    @property
    def reply_to(self) -> str | None:
        return self.properties.reply_to

    @property
    def type(self) -> str | None:
        return self.properties.message_type

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})


Consumer = Callable[[Delivery], None]


@dataclass(frozen=True, slots=True)
class Address:
    """Where and how to connect, from an ``amqp://`` or ``amqps://`` URL."""

    host: str
    port: int
    user: str
    password: str
    vhost: str
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Address:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError(f"not an AMQP URL (amqp:// or amqps://): {parts.scheme!r}")
        tls = parts.scheme == "amqps"
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (5671 if tls else 5672),
            user=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
            vhost=unquote(path) if path else "/",
            tls=tls,
        )


class Channel:
    """One AMQP channel of a :class:`Connection`."""

    def __init__(self, connection: Connection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.is_open = False
        self.confirming = False
        self.closed: asyncio.Future[None] = connection.loop.create_future()
        self.on_cancel: Callable[[str], None] | None = None
        self._replies: collections.deque[tuple[tuple[type[Frame], ...], asyncio.Future[Any]]] = (
            collections.deque()
        )
        self._consumers: dict[str, Consumer] = {}
        self._confirms: dict[int, asyncio.Future[None]] = {}
        self._returned: dict[str, int] = {}  # message id -> delivery tag, for mandatory ones
        self._next_tag = 1
        self._incoming: Delivery | None = None
        self._incoming_kind = ""
        self._incoming_size = 0
        self._incoming_parts: list[bytes] = []
        self._return_reason: tuple[int, str] = (0, "")

    # -- synchronous methods --------------------------------------------------------------

    def _call(self, method: Frame, *replies: type[Frame]) -> asyncio.Future[Any]:
        self._check_open()
        waiter: asyncio.Future[Any] = self.connection.loop.create_future()
        if replies:
            self._replies.append((replies, waiter))
        else:
            waiter.set_result(None)
        self.connection.send_method(self.number, method)
        return waiter

    def _check_open(self) -> None:
        if self.closed.done():
            error = self.closed.exception()
            raise error if error is not None else ConnectionLost("the channel is closed")

    async def open(self) -> None:
        await self._call(spec.Channel.Open(), spec.Channel.OpenOk)
        self.is_open = True

    async def confirm_select(self) -> None:
        await self._call(spec.Confirm.Select(), spec.Confirm.SelectOk)
        self.confirming = True

    async def qos(self, prefetch_count: int) -> None:
        await self._call(spec.Basic.Qos(prefetch_count=prefetch_count), spec.Basic.QosOk)

    async def declare_queue(
        self,
        name: str = "",
        *,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
    ) -> spec.Queue.DeclareOk | None:
        method = spec.Queue.Declare(
            queue=name,
            passive=passive,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            nowait=nowait,
            arguments=arguments,
        )
        result: spec.Queue.DeclareOk | None = await (
            self._call(method) if nowait else self._call(method, spec.Queue.DeclareOk)
        )
        return result

    async def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        *,
        nowait: bool = False,
    ) -> None:
        method = spec.Queue.Bind(
            queue=queue,
            exchange=exchange,
            routing_key=routing_key,
            nowait=nowait,
            arguments=arguments,
        )
        await (self._call(method) if nowait else self._call(method, spec.Queue.BindOk))

    async def declare_exchange(
        self, name: str, kind: str = "direct", *, passive: bool = False, durable: bool = True
    ) -> None:
        method = spec.Exchange.Declare(
            exchange=name, exchange_type=kind, passive=passive, durable=durable
        )
        await self._call(method, spec.Exchange.DeclareOk)

    async def purge_queue(self, name: str) -> int:
        reply: spec.Queue.PurgeOk = await self._call(
            spec.Queue.Purge(queue=name), spec.Queue.PurgeOk
        )
        return reply.message_count or 0

    async def delete_queue(self, name: str) -> None:
        await self._call(spec.Queue.Delete(queue=name), spec.Queue.DeleteOk)

    async def get(self, queue: str, *, no_ack: bool = False) -> Delivery | None:
        """``basic.get``: the next message of ``queue``, or None when it has none."""
        found: Delivery | None = await self._call(
            spec.Basic.Get(queue=queue, no_ack=no_ack), spec.Basic.GetOk, spec.Basic.GetEmpty
        )
        return found

    async def consume(
        self,
        queue: str,
        callback: Consumer,
        *,
        no_ack: bool = False,
        exclusive: bool = False,
        tag: str = "",
        arguments: dict[str, Any] | None = None,
    ) -> str:
        """Start a consumer; ``callback`` gets each delivery. Returns the consumer tag.

        The callback is in place before the broker hears of the consumer: its first
        delivery may come in the same read as the ``consume-ok``.
        """
        if not tag:
            tag = f"ctag{self.number}.{self.connection.next_tag()}"
        self._consumers[tag] = callback
        try:
            await self._call(
                spec.Basic.Consume(
                    queue=queue,
                    consumer_tag=tag,
                    no_ack=no_ack,
                    exclusive=exclusive,
                    arguments=arguments,
                ),
                spec.Basic.ConsumeOk,
            )
        except BaseException:
            self._consumers.pop(tag, None)
            raise
        return tag

    async def cancel(self, tag: str) -> None:
        """Stop a consumer; deliveries already made stay to be settled."""
        if self.closed.done():
            return
        await self._call(spec.Basic.Cancel(consumer_tag=tag), spec.Basic.CancelOk)
        self._consumers.pop(tag, None)

    async def retire(self) -> None:
        """Close once every publish waiting for its confirm has one (a channel that another
        replaced: what was sent on it is settled before it goes)."""
        pending = list(self._confirms.values())
        if pending:
            await asyncio.wait(pending)
        await self.close()

    async def close(self) -> None:
        if self.closed.done():
            return
        with contextlib.suppress(BrokerError):
            await asyncio.wait_for(
                asyncio.shield(self._call(_CHANNEL_CLOSE, spec.Channel.CloseOk)),
                CLOSE_TIMEOUT,
            )
        self._closed(ConnectionLost("the channel was closed"))

    # -- asynchronous methods -------------------------------------------------------------

    def publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str = "",
        properties: Properties | None = None,
        mandatory: bool = False,
    ) -> asyncio.Future[None] | None:
        """Send a message; in confirm mode, a future the broker's confirm resolves (or
        fails: :class:`Returned` for a ``mandatory`` message no queue took)."""
        self._check_open()
        properties = properties or Properties()
        connection = self.connection
        connection.send(
            frames.publish(
                self.number,
                exchange,
                routing_key,
                mandatory,
                properties,
                body,
                connection.frame_max,
            )
        )
        if not self.confirming:
            return None
        tag = self._next_tag
        self._next_tag += 1
        confirm: asyncio.Future[None] = self.connection.loop.create_future()
        self._confirms[tag] = confirm
        if mandatory and properties.message_id:
            self._returned[properties.message_id] = tag
        return confirm

    def ack(self, delivery_tag: int, *, multiple: bool = False, lazy: bool = False) -> None:
        """Acknowledge; ``lazy`` lets it wait (a few milliseconds at most) for the next
        frame written on the connection, to leave in the same system call."""
        if self.is_open and not self.closed.done():
            encoded = frames.ack(self.number, delivery_tag, multiple)
            if lazy:
                self.connection.send_lazily(encoded)
            else:
                self.connection.send(encoded)

    def nack(self, delivery_tag: int, *, requeue: bool = True, multiple: bool = False) -> None:
        if self.is_open and not self.closed.done():
            self.connection.send_method(
                self.number,
                spec.Basic.Nack(delivery_tag=delivery_tag, multiple=multiple, requeue=requeue),
            )

    def reject(self, delivery_tag: int, *, requeue: bool = False) -> None:
        if self.is_open and not self.closed.done():
            self.connection.send_method(
                self.number, spec.Basic.Reject(delivery_tag=delivery_tag, requeue=requeue)
            )

    # -- what the broker sends --------------------------------------------------------------

    def on_method(self, method: Frame) -> None:
        # basic.deliver and basic.ack never come here: the connection decodes them itself
        # (on_deliver, on_confirm).
        if isinstance(method, spec.Basic.GetOk):
            self._expect(
                "get",
                method.delivery_tag or 0,
                method.redelivered,
                method.exchange or "",
                method.routing_key or "",
            )
        elif isinstance(method, spec.Basic.Return):
            self._expect("return", 0, False, method.exchange or "", method.routing_key or "")
            self._return_reason = (method.reply_code or 0, method.reply_text or "")
        elif isinstance(method, spec.Basic.Nack):
            self._confirmed(
                method.delivery_tag or 0, method.multiple, Nacked("the broker refused it")
            )
        elif isinstance(method, spec.Basic.Cancel):
            self._consumers.pop(method.consumer_tag or "", None)
            if self.on_cancel is not None:
                self.on_cancel(method.consumer_tag or "")
        elif isinstance(method, spec.Channel.Close):
            self.connection.send_method(self.number, spec.Channel.CloseOk())
            self._closed(channel_error(method.reply_code or 0, method.reply_text or ""))
        elif isinstance(method, spec.Channel.Flow):
            self.connection.send_method(self.number, spec.Channel.FlowOk(active=method.active))
        else:
            self._reply(method)

    def _reply(self, method: Frame) -> None:
        if isinstance(method, spec.Channel.CloseOk) and not self._replies:
            return
        if not self._replies:
            raise ConnectionLost(f"unexpected {method.name} on channel {self.number}")
        expected, waiter = self._replies.popleft()
        if not isinstance(method, expected):
            raise ConnectionLost(f"{method.name} where {expected[0].name} was expected")
        if waiter.done():
            return
        waiter.set_result(None if isinstance(method, spec.Basic.GetEmpty) else method)

    def _expect(
        self,
        kind: str,
        tag: int,
        redelivered: bool,
        exchange: str,
        key: str,
        consumer_tag: str = "",
    ) -> None:
        self._incoming_kind = kind
        self._incoming = Delivery(
            self, tag, bool(redelivered), exchange or "", key or "", Properties(), b"", consumer_tag
        )

    def on_deliver(self, method: frames.DeliverMethod) -> None:
        self._expect(
            "deliver",
            method.delivery_tag,
            method.redelivered,
            method.exchange,
            method.routing_key,
            method.consumer_tag,
        )

    def on_confirm(self, delivery_tag: int, multiple: bool) -> None:
        self._confirmed(delivery_tag, multiple, None)

    def on_header(self, body_size: int, properties: Properties) -> None:
        if self._incoming is None:
            raise ConnectionLost(f"a content header without a method on channel {self.number}")
        self._incoming.properties = properties
        self._incoming_size = body_size
        self._incoming_parts = []
        if not body_size:
            self._arrived()

    def on_body(self, data: bytes) -> None:
        self._incoming_parts.append(data)
        self._incoming_size -= len(data)
        if self._incoming_size <= 0:
            self._arrived()

    def _arrived(self) -> None:
        delivery, kind = self._incoming, self._incoming_kind
        assert delivery is not None
        parts = self._incoming_parts
        delivery.body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._incoming, self._incoming_parts = None, []
        if kind == "deliver":
            callback = self._consumers.get(delivery.consumer_tag)
            if callback is not None:
                callback(delivery)
            else:  # a consumer cancelled meanwhile: back to the queue for another
                self.nack(delivery.delivery_tag, requeue=True)
        elif kind == "get":
            _, waiter = self._replies.popleft()
            if not waiter.done():
                waiter.set_result(delivery)
        else:
            self._on_return(delivery)

    def _on_return(self, delivery: Delivery) -> None:
        tag = self._returned.pop(delivery.message_id or "", None)
        confirm = self._confirms.pop(tag, None) if tag is not None else None
        if confirm is not None and not confirm.done():
            code, text = self._return_reason
            confirm.set_exception(Returned(code, text, delivery.routing_key))

    def _confirmed(self, tag: int, multiple: bool, error: BaseException | None) -> None:
        tags = [t for t in self._confirms if t <= tag] if multiple else [tag]
        for each in tags:
            confirm = self._confirms.pop(each, None)
            if confirm is None or confirm.done():
                continue
            if error is None:
                confirm.set_result(None)
            else:
                confirm.set_exception(error)
        if self._returned and len(self._returned) > len(self._confirms):
            live = set(self._confirms)
            self._returned = {m: t for m, t in self._returned.items() if t in live}

    def _closed(self, error: BaseException) -> None:
        if self.closed.done():
            return
        self.is_open = False
        self.closed.set_exception(error)
        self.closed.exception()  # retrieved: nobody need wait for it
        for _, waiter in self._replies:
            if not waiter.done():
                waiter.set_exception(error)
        self._replies.clear()
        for confirm in self._confirms.values():
            if not confirm.done():
                confirm.set_exception(error)
        self._confirms.clear()
        self._consumers.clear()
        self.connection.forget(self)


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to RabbitMQ, and its channels."""

    def __init__(self, address: Address, name: str, heartbeat: int = HEARTBEAT_SECONDS) -> None:
        self.loop = asyncio.get_running_loop()
        self.address = address
        self.name = name
        self._heartbeat = heartbeat
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._channels: dict[int, Channel] = {}
        self._next_channel = 1
        self._tags = 0
        self.channel_max = 2047
        self.frame_max = 131072
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._closing = False
        self._writable = asyncio.Event()
        self._writable.set()
        self._outgoing: list[bytes] = []
        self._lazy: asyncio.TimerHandle | None = None
        self._reading = False
        self._sent_at = self._heard_at = self.loop.time()
        self._beat: asyncio.TimerHandle | None = None
        self._beat_every = 0.0
        self.blocked = False

    @classmethod
    async def open(
        cls,
        url: str,
        name: str,
        *,
        heartbeat: int = HEARTBEAT_SECONDS,
        timeout: float = CONNECT_TIMEOUT,
    ) -> Connection:
        """Connect and shake hands; raises ``ConnectionLost`` (or ``OSError``) if it cannot."""
        address = Address.parse(url)
        loop = asyncio.get_running_loop()
        protocol = cls(address, name, heartbeat)
        tls = ssl.create_default_context() if address.tls else None
        async with asyncio.timeout(timeout):
            await loop.create_connection(
                lambda: protocol,
                address.host,
                address.port,
                ssl=tls,
                server_hostname=address.host if tls else None,
            )
            await protocol.ready
        return protocol

    @property
    def is_open(self) -> bool:
        return self.ready.done() and not self.ready.exception() and not self.closed.done()

    async def channel(self, *, confirm: bool = False) -> Channel:
        """A new channel (in confirm mode if asked)."""
        if not self.is_open:
            raise ConnectionLost("the connection is closed")
        number = self._allocate()
        channel = self._channels[number] = Channel(self, number)
        await channel.open()
        if confirm:
            await channel.confirm_select()
        return channel

    def _allocate(self) -> int:
        for _ in range(self.channel_max):
            number = self._next_channel
            self._next_channel = number % self.channel_max + 1
            if number not in self._channels:
                return number
        raise ConnectionLost(f"all {self.channel_max} channels are in use")

    def next_tag(self) -> int:
        """A number unique on this connection (for consumer tags)."""
        self._tags += 1
        return self._tags

    def forget(self, channel: Channel) -> None:
        if self._channels.get(channel.number) is channel:
            del self._channels[channel.number]

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        if not self._writable.is_set():
            await self._writable.wait()

    def flush(self) -> None:
        """Write what is waiting now (lazy frames, or what handling a read wrote)."""
        if self._outgoing:
            self._flush()

    async def close(self) -> None:
        if self.closed.done():
            return
        self._closing = True
        if self._transport is not None and self.ready.done():
            with contextlib.suppress(BrokerError, RuntimeError):
                self.send_method(
                    0,
                    spec.Connection.Close(
                        reply_code=200, reply_text="bye", class_id=0, method_id=0
                    ),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), CLOSE_TIMEOUT)
        self._lost(ConnectionLost("the connection was closed"))

    # -- sending ----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        # Frames written while handling what was read leave together when it is handled;
        # others at once (with any that were waiting).
        if self._transport is None or self.closed.done():
            raise ConnectionLost("the connection is closed")
        self._outgoing.append(data)
        if not self._reading:
            self._flush()

    def _flush(self) -> None:
        if self._lazy is not None:
            self._lazy.cancel()
            self._lazy = None
        outgoing, self._outgoing = self._outgoing, []
        if self._transport is None or self.closed.done() or not outgoing:
            return
        self._transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))
        self._sent_at = self.loop.time()

    def send_method(self, channel: int, method: Frame) -> None:
        self._write(codec.marshal(method, channel))

    def send(self, encoded: bytes) -> None:
        """Frames already encoded (:mod:`warren.wire.frames`)."""
        self._write(encoded)

    def send_lazily(self, encoded: bytes) -> None:
        """Frames that may wait for the next write, or ``LAZY_SECONDS`` at most."""
        if self._transport is None or self.closed.done():
            raise ConnectionLost("the connection is closed")
        self._outgoing.append(encoded)
        if self._lazy is None and not self._reading:
            self._lazy = self.loop.call_later(LAZY_SECONDS, self._flush)

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio's classes; they have the methods.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(PROTOCOL_HEADER)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(ConnectionLost(f"the connection to RabbitMQ was lost: {exc or 'closed'}"))

    def data_received(self, data: bytes) -> None:
        self._heard_at = self.loop.time()
        self._reading = True
        try:
            self._read(data)
        finally:
            # What the frames just read made us write (a result, an acknowledgement)
            # leaves now, in one system call.
            self._reading = False
            if self._outgoing:
                self._flush()

    def _read(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset, size = 0, len(buffer)
        try:
            while size - offset >= FRAME_OVERHEAD:
                kind, channel, length = _FRAME_HEAD.unpack_from(buffer, offset)
                end = offset + 7 + length
                if end >= size:
                    break
                if buffer[end] != FRAME_END:
                    raise ConnectionLost("a frame did not end where it should (corrupt stream)")
                if kind == FRAME_BODY:
                    self._channel(channel).on_body(bytes(buffer[offset + 7 : end]))
                elif kind == FRAME_METHOD:
                    self._on_method(channel, bytes(buffer[offset + 7 : end]), buffer, offset, end)
                elif kind == FRAME_HEADER:
                    _, body_size, properties = frames.decode_header(bytes(buffer[offset + 7 : end]))
                    self._channel(channel).on_header(body_size, properties)
                elif kind != FRAME_HEARTBEAT:
                    raise ConnectionLost(f"a frame of unknown type {kind}")
                offset = end + 1
        except (BrokerError, PAMQPException, ValueError, struct.error) as exc:
            self._lost(exc if isinstance(exc, BrokerError) else ConnectionLost(str(exc)))
            return
        finally:
            del buffer[:offset]

    def _on_method(
        self, channel: int, payload: bytes, buffer: bytearray, start: int, end: int
    ) -> None:
        class_id, method_id = frames.method_ids(payload)
        if class_id == frames.BASIC and channel:
            if method_id == frames.DELIVER:  # every result and every input: decoded here
                self._channel(channel).on_deliver(frames.decode_deliver(payload))
                return
            if method_id == frames.ACK:  # every publisher confirm
                self._channel(channel).on_confirm(*frames.decode_ack(payload))
                return
        _, _, value = codec.unmarshal(bytes(buffer[start : end + 1]))
        assert isinstance(value, Frame)
        if channel == 0:
            self._on_connection_method(value)
        else:
            self._channel(channel).on_method(value)

    def _channel(self, number: int) -> Channel:
        channel = self._channels.get(number)
        if channel is None:
            raise ConnectionLost(f"a frame for channel {number}, which is not open")
        return channel

    def _on_connection_method(self, method: Any) -> None:
        if isinstance(method, spec.Connection.Start):
            self.send_method(
                0,
                spec.Connection.StartOk(
                    client_properties={
                        "connection_name": self.name,
                        "product": "warren",
                        "capabilities": {
                            "publisher_confirms": True,
                            "consumer_cancel_notify": True,
                            "basic.nack": True,
                            "connection.blocked": True,
                        },
                    },
                    mechanism="PLAIN",
                    response=f"\0{self.address.user}\0{self.address.password}",
                    locale="en_US",
                ),
            )
        elif isinstance(method, spec.Connection.Tune):
            self._tuned(method)
        elif isinstance(method, spec.Connection.OpenOk):
            if not self.ready.done():
                self.ready.set_result(None)
        elif isinstance(method, spec.Connection.Close):
            with contextlib.suppress(BrokerError):
                self.send_method(0, spec.Connection.CloseOk())
            self._lost(
                ConnectionLost(
                    f"RabbitMQ closed the connection: {method.reply_code} {method.reply_text}"
                )
            )
        elif isinstance(method, spec.Connection.CloseOk):
            self._lost(ConnectionLost("the connection was closed"))
        elif isinstance(method, spec.Connection.Blocked):
            self.blocked = True
        elif isinstance(method, spec.Connection.Unblocked):
            self.blocked = False

    def _tuned(self, tune: spec.Connection.Tune) -> None:
        self.channel_max = min(tune.channel_max or 2047, 2047)
        self.frame_max = tune.frame_max or self.frame_max
        beat = min(tune.heartbeat, self._heartbeat) if tune.heartbeat else self._heartbeat
        self.send_method(
            0,
            spec.Connection.TuneOk(
                channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=beat
            ),
        )
        self.send_method(0, spec.Connection.Open(virtual_host=self.address.vhost))
        if beat:
            self._beat_every = beat / 2
            self._beat = self.loop.call_later(self._beat_every, self._heartbeat_tick)

    def _heartbeat_tick(self) -> None:
        now = self.loop.time()
        if now - self._heard_at > 4 * self._beat_every:  # two heartbeats missed
            self._lost(ConnectionLost("RabbitMQ stopped answering (missed heartbeats)"))
            return
        if now - self._sent_at >= self._beat_every:
            with contextlib.suppress(BrokerError):
                self._write(heartbeat.Heartbeat.marshal())
        self._beat = self.loop.call_later(self._beat_every, self._heartbeat_tick)

    def _lost(self, error: BrokerError) -> None:
        if self.closed.done():
            return
        if self._beat is not None:
            self._beat.cancel()
        if self._lazy is not None:
            self._lazy.cancel()
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()
        for channel in list(self._channels.values()):
            channel._closed(error)
        self.closed.set_result(None)
        self._writable.set()
        if self._transport is not None:
            if self._outgoing:  # a close-ok, say: it goes before the transport closes
                self._transport.write(b"".join(self._outgoing))
                self._outgoing = []
            self._transport.close()
