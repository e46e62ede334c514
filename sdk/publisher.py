"""Publishing from a client: signed, confirmed, and sent again after a lost connection.

Every message is sealed with the shared key (:mod:`sdk.signing`) and refused before
it is sent if it is larger than a message may be. A publish cut off by a broker
restart or a forced close waits for the robust channel to come back and is sent
again (a call may then arrive twice; its second result is dropped by the client),
until ``WARREN_RECONNECT_TIMEOUT`` has passed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustChannel
from aio_pika.exceptions import (
    AMQPConnectionError,
    AMQPError,
    ChannelInvalidStateError,
    PublishError,
)

from sdk import exceptions, naming, topology
from sdk.codec import Envelope
from sdk.exceptions import MessageTooLargeError, NotFoundError
from sdk.signing import Signer

log = structlog.get_logger(__name__)

# What a robust channel raises while its connection is down (or closes under it): worth
# waiting for the connection to come back. A refusal by the broker is not.
CONNECTION_LOST = (AMQPConnectionError, ChannelInvalidStateError, OSError)
# Anything the broker path may raise: what settling a message (an ack that can no
# longer reach the broker, say) is allowed to meet and shrug off.
BROKER_ERRORS = (AMQPError, RuntimeError, OSError)


def mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


class Publisher:
    """One robust channel with publisher confirms, ``mandatory`` publishes."""

    def __init__(
        self,
        channel: AbstractRobustChannel,
        signer: Signer,
        reconnect_timeout: float,
        closed: Callable[[], bool],
        reply_to: str,
    ) -> None:
        self._channel = channel
        self._reply_to = reply_to
        self._signer = signer
        self._reconnect_timeout = reconnect_timeout
        self._closed = closed

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
        prepare: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Sign and publish to a queue through the default exchange; wait for the confirm.

        Replies come to the client's result queue unless ``reply_to`` names another.
        Raises ``MessageTooLargeError`` before publishing a message above the size limit,
        ``NotFoundError`` if the queue does not exist. A publish cut off by a lost
        connection is sent again once the connection is back.
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
        message = aio_pika.Message(
            body,
            message_id=uuid.uuid4().hex,
            correlation_id=correlation_id,
            reply_to=reply_to,
            type=envelope.kind,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
        )
        deadline = asyncio.get_running_loop().time() + self._reconnect_timeout
        while True:
            try:
                if prepare is not None:
                    await prepare()
                await self._channel.default_exchange.publish(
                    message, routing_key=queue, mandatory=True
                )
                return
            except PublishError as exc:
                raise NotFoundError(f"no queue named {queue!r}") from exc
            except CONNECTION_LOST as exc:
                await self._await_reconnection(deadline, f"publishing to {queue!r}", exc)

    async def _await_reconnection(self, deadline: float, doing: str, exc: BaseException) -> None:
        """Wait for the publishing channel to be back, or raise ``ConnectionError``."""
        remaining = deadline - asyncio.get_running_loop().time()
        if self._closed() or remaining <= 0:
            raise exceptions.ConnectionError(f"{doing} failed: {exc}") from exc
        log.info("publish_waiting_for_broker", doing=doing, reason=str(exc))
        await asyncio.sleep(0.05)  # let the robust connection notice the loss first
        try:
            await asyncio.wait_for(self._channel.ready(), remaining)
        except TimeoutError:
            raise exceptions.ConnectionError(
                f"{doing} failed: the broker was unreachable for "
                f"{self._reconnect_timeout:g}s ({exc})"
            ) from None

    async def declare_call_queue(self, name: str, retention: float) -> None:
        """Declare a spawned call's result queue on the publishing channel, without waiting.

        The broker handles a channel's methods in order, so the call published next on
        this channel finds its result queue in place (and bound to the replies exchange,
        which the client declared when it connected); not waiting for ``declare-ok``
        saves a round trip per spawn. Not re-declared on reconnect: it is durable.
        """
        channel = await self._channel.get_underlay_channel()
        await channel.queue_declare(
            queue=name,
            durable=True,
            nowait=True,
            arguments=topology.call_queue_arguments(retention),
        )
        await channel.queue_bind(name, naming.replies_exchange(), routing_key=name, nowait=True)

    async def delete_queue(self, name: str) -> None:
        channel = await self._channel.get_underlay_channel()
        await channel.queue_delete(queue=name)
