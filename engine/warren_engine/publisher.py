"""What the engine publishes on behalf of its containers and itself.

A container may only consume its function queue and publish results; putting inputs
back into a function queue (handed back, retried after a backoff, split after a
crash) and dead-lettering are done here, on the engine's channel with publisher
confirms, when a container asks (see :mod:`warren_engine.pipe.pipes`). Retries wait in a delay
queue, so no container holds an input during its backoff. What the broker refuses
(a negative confirm: a quorum queue without a leader, during a failover) is published
again a little later (:mod:`warren.wire.refusals`), for :data:`REFUSED_FOR` at most.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, HeadersType
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError
from warren.wire import naming, topology
from warren.wire.protocol import KIND_CALLS
from warren.wire.refusals import RefusalBackoff

log = structlog.get_logger(__name__)

# What the engine's own (aio-pika) broker path may raise: what settling a message the
# engine took may meet and shrug off (the broker redelivers what is not settled).
BROKER_ERRORS = (AMQPError, RuntimeError, OSError)

# How long a publish the broker keeps refusing is tried again before it fails.
REFUSED_FOR = 60.0

# A dead letter's header naming the queue it was taken from (beside topology.REASON_HEADER).
SOURCE_QUEUE_HEADER = "x-warren-queue"


@dataclass(frozen=True, slots=True)
class CarriedProperties:
    """The properties of a message that a copy of it (a dead letter) carries over: which
    input it is, where its result goes, and what kind of message it is."""

    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    type: str | None = None


async def publish_confirmed(
    exchange: AbstractExchange, message: aio_pika.Message, routing_key: str
) -> None:
    """Publish on a channel in confirm mode and wait for the confirm; a refusal is tried
    again after a pause, until :data:`REFUSED_FOR` has passed (then ``DeliveryError``)."""
    refusals = RefusalBackoff(asyncio.get_running_loop().time() + REFUSED_FOR)
    while True:
        try:
            await exchange.publish(message, routing_key=routing_key)
            return
        except PublishError:  # returned (unroutable): not a refusal
            raise
        except DeliveryError:
            if not refusals.refusals:
                log.info("publish_refused_sending_again", queue=routing_key)
            if not await refusals.waited():
                raise


def call_message(body: bytes, correlation_id: str | None, reply_to: str | None) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        message_id=uuid.uuid4().hex,
        correlation_id=correlation_id,
        reply_to=reply_to,
        type=KIND_CALLS,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def dead_letter_message(
    body: bytes, *, reason: str, source_queue: str, carried: CarriedProperties
) -> aio_pika.Message:
    """A persistent copy of a message for the dead-letter queue, saying why it is there,
    from where, and (its timestamp) since when. Its headers are a dict because aio-pika
    takes them as one."""
    return aio_pika.Message(
        body,
        message_id=carried.message_id,
        correlation_id=carried.correlation_id,
        reply_to=carried.reply_to,
        type=carried.type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        timestamp=time.time(),
        headers={topology.REASON_HEADER: reason, SOURCE_QUEUE_HEADER: source_queue},
    )


async def dead_letter(
    channel: AbstractChannel,
    environment: str,
    body: bytes,
    *,
    reason: str,
    source_queue: str,
    carried: CarriedProperties = CarriedProperties(),
) -> None:
    """Put a message in the environment's dead-letter queue with the reason it is there."""
    exchange = await channel.get_exchange(naming.dead_letter_exchange(), ensure=False)
    await publish_confirmed(
        exchange,
        dead_letter_message(body, reason=reason, source_queue=source_queue, carried=carried),
        naming.dead_letter_queue(environment),
    )
    log.warning("message_dead_lettered", queue=source_queue, reason=reason)


class Republisher:
    """Publishes into one environment's function queues, delay queues and dead letters."""

    def __init__(self, channel: AbstractChannel, environment: str, queue_type: str) -> None:
        self._channel = channel
        self._environment = environment
        self._queue_type = queue_type  # of the delay queues it declares

    async def requeue(
        self,
        queue: str,
        bodies: list[bytes],
        *,
        correlation_id: str | None,
        reply_to: str | None,
        delay_ms: int = 0,
    ) -> None:
        """Publish sealed call batches to ``queue``, now or after ``delay_ms``; confirmed."""
        if delay_ms <= 0:
            exchange = self._channel.default_exchange
            headers: HeadersType = {}
        else:
            # Declared at every use: a delay queue expires a minute after it was last used.
            exchange = await topology.declare_delay_queue(
                self._channel, self._environment, delay_ms, self._queue_type
            )
            headers = {topology.DELAY_HEADER: str(delay_ms)}
        messages = [call_message(body, correlation_id, reply_to) for body in bodies]
        for message in messages:
            message.headers = headers
        await asyncio.gather(*(publish_confirmed(exchange, m, queue) for m in messages))

    async def dead_letter(
        self, body: bytes, *, reason: str, source_queue: str, carried: CarriedProperties
    ) -> None:
        await dead_letter(
            self._channel,
            self._environment,
            body,
            reason=reason,
            source_queue=source_queue,
            carried=carried,
        )
