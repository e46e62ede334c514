"""Publishing from a client: signed, confirmed, and sent again after a lost connection.

Every message is sealed with the shared key (:mod:`warren.wire.signing`) and refused before
it is sent if it is larger than a message may be. It goes out on the client's
publishing channel (:mod:`warren.wire.amqp`) with ``mandatory`` set, so that a call to a
queue that does not exist comes back at once. A publish cut off by a broker restart
or a forced close waits for the session to come back (:mod:`warren.wire.session`) and is
sent again (a call may then arrive twice; its second result is dropped by the
client), until ``WARREN_RECONNECT_TIMEOUT`` has passed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import structlog

from warren import exceptions
from warren.exceptions import MessageTooLargeError, NotFoundError
from warren.wire import naming, topology
from warren.wire.amqp import (
    BrokerError,
    Channel,
    ChannelClosed,
    ConnectionLost,
    Nacked,
    Properties,
    Returned,
)
from warren.wire.codec import Envelope
from warren.wire.refusals import RefusalBackoff
from warren.wire.session import BrokerSession, temporary_channel
from warren.wire.signing import Signer

log = structlog.get_logger(__name__)

# What a publish meets while the connection is down (or closes under it): worth
# waiting for the connection to come back. A refusal by the broker is not.
CONNECTION_LOST = (ConnectionLost, OSError)
# Anything the broker path may raise: what settling a message (an ack that can no
# longer reach the broker, say) is allowed to meet and shrug off.
BROKER_ERRORS = (BrokerError, RuntimeError, OSError)

TRANSIENT = 1
PERSISTENT = 2


def mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


_RANDOM_LOW = (1 << 62) - 1


def message_id() -> str:
    """A UUIDv7 (RFC 9562) in hex: the time of the publish in milliseconds, then 74
    random bits. Unique as a random UUID is (a container's holding table keys it), and it
    tells the container that runs the message how long it waited (:func:`published_at`).
    """
    rest = random.getrandbits(74)
    value = (
        (time.time_ns() // 1_000_000) << 80
        | 0x7 << 76  # the version
        | (rest >> 62) << 64
        | 0b10 << 62  # the variant
        | rest & _RANDOM_LOW
    )
    return f"{value:032x}"


def published_at(message_id: str | None) -> float | None:
    """When a message whose id :func:`message_id` made was published, in seconds since the
    epoch; None for any other id (the engine's copies of inputs it puts back carry random
    ones: their wait is not a caller's)."""
    if message_id is None or len(message_id) != 32 or message_id[12] != "7":
        return None
    if message_id[16] not in "89ab":
        return None
    try:
        return int(message_id[:12], 16) / 1000
    except ValueError:
        return None


class Publisher:
    """The client's publishing channel: publisher confirms, ``mandatory`` publishes."""

    def __init__(
        self,
        session: BrokerSession,
        signer: Signer,
        reconnect_timeout: float,
        reply_to: str,
    ) -> None:
        self._session = session
        self._reply_to = reply_to
        self._signer = signer
        self._reconnect_timeout = reconnect_timeout
        self._channel: Channel | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    def attach(self, channel: Channel) -> None:
        """Publish on this channel from now on (the session's setup made it)."""
        self._channel = channel

    async def channel(self) -> Channel:
        """The publishing channel, opened anew if the broker closed the last one."""
        channel = self._channel
        if channel is not None and not channel.closed.done():
            return channel
        async with self._opening:
            connection = await self._session.ready()
            if self._channel is None or self._channel.closed.done():
                self._channel = await connection.channel(confirm=True)
            return self._channel

    async def publish(
        self,
        queue: str,
        envelope: Envelope,
        *,
        correlation_id: str,
        reply_to: str | None = None,
        persistent: bool = True,
        valid_for: float | None = None,
        max_size: int | None = None,
        prepare: Callable[[Channel], Awaitable[None]] | None = None,
    ) -> None:
        """Sign and publish to a queue through the default exchange; wait for the confirm.

        Replies come to the client's result queue unless ``reply_to`` names another.
        ``persistent`` messages are written to disk by the broker (spawned calls, which
        nobody may be waiting for); the others are not (the calls a waiting caller owns
        and sends again if a broker restart lost them). Raises ``MessageTooLargeError``
        before publishing a message above the size limit, ``NotFoundError`` if the queue
        does not exist. A publish cut off by a lost connection is sent again once the
        connection is back, and one the broker refused (a quorum queue without a leader,
        during a failover) is sent again a little later (:mod:`warren.wire.refusals`),
        both until ``WARREN_RECONNECT_TIMEOUT`` has passed. ``prepare`` runs on the
        channel before each attempt.
        """
        reply_to = reply_to or self._reply_to
        body = self._signer.seal(
            envelope, valid_for=valid_for, reply_to=reply_to, correlation_id=correlation_id
        )
        limit = self._signer.max_size if max_size is None else max_size
        if len(body) > limit:
            raise MessageTooLargeError(
                f"a {envelope.kind} message of {mib(len(body))} exceeds the limit of "
                f"{mib(limit)} (WARREN_MAX_MESSAGE_SIZE)"
            )
        properties = Properties(
            message_id=message_id(),
            correlation_id=correlation_id,
            reply_to=reply_to,
            message_type=envelope.kind,
            delivery_mode=PERSISTENT if persistent else TRANSIENT,
        )
        deadline = asyncio.get_running_loop().time() + self._reconnect_timeout
        refusals = RefusalBackoff(deadline)
        while True:
            try:
                channel = await self.channel()
                if prepare is not None:
                    await prepare(channel)
                confirm = channel.publish(
                    body, routing_key=queue, properties=properties, mandatory=True
                )
                await channel.connection.drain()
                assert confirm is not None
                await confirm
                return
            except Returned as exc:
                raise NotFoundError(f"no queue named {queue!r}") from exc
            except Nacked as exc:
                if not refusals.refusals:
                    log.info("publish_refused_sending_again", queue=queue)
                self._replace(channel)
                if not await refusals.waited():
                    raise exceptions.ConnectionError(
                        f"RabbitMQ refused the publish to {queue!r} {refusals.refusals} times "
                        f"in {self._reconnect_timeout:g}s (WARREN_RECONNECT_TIMEOUT)"
                    ) from exc
            except CONNECTION_LOST as exc:
                await self._await_reconnection(deadline, f"publishing to {queue!r}", exc)
            except ChannelClosed as exc:
                raise exceptions.ConnectionError(
                    f"RabbitMQ refused the publish to {queue!r}: {exc}"
                ) from exc

    def _replace(self, refused: Channel) -> None:
        """Publish on a new channel from now on; the refused one goes once settled."""
        if self._channel is refused:
            self._channel = None
            retiring = asyncio.get_running_loop().create_task(refused.retire())
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)

    async def _await_reconnection(self, deadline: float, doing: str, exc: BaseException) -> None:
        """Wait for the session to be back, or raise ``ConnectionError``."""
        remaining = deadline - asyncio.get_running_loop().time()
        if self._session.closed or remaining <= 0:
            raise exceptions.ConnectionError(f"{doing} failed: {exc}") from exc
        log.info("publish_waiting_for_broker", doing=doing, reason=str(exc))
        try:
            await asyncio.wait_for(self._session.ready(), remaining)
        except TimeoutError:
            raise exceptions.ConnectionError(
                f"{doing} failed: the broker was unreachable for "
                f"{self._reconnect_timeout:g}s ({exc})"
            ) from None
        except ConnectionLost as closed:  # the session was closed meanwhile
            raise exceptions.ConnectionError(f"{doing} failed: {closed}") from exc

    @staticmethod
    async def declare_call_queue(
        channel: Channel, name: str, retention: float, queue_type: str
    ) -> None:
        """Declare a spawned call's result queue on the publishing channel, without waiting.

        The broker handles a channel's methods in order, so the call published next on
        this channel finds its result queue in place (and bound to the replies exchange,
        which the client declared when it connected); not waiting for ``declare-ok``
        saves a round trip per spawn.
        """
        await channel.declare_queue(
            name,
            durable=True,
            arguments=topology.call_queue_arguments(retention, queue_type),
            nowait=True,
        )
        await channel.bind_queue(name, naming.replies_exchange(), name, nowait=True)

    async def delete_queue(self, name: str) -> None:
        connection = await self._session.ready()
        async with temporary_channel(connection) as channel:
            await channel.delete_queue(name)
