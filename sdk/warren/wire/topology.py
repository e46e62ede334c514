"""Queue and exchange arguments, decided once for the whole design.

RabbitMQ refuses to change a queue's arguments after it exists
(``PRECONDITION_FAILED``), so every argument a queue will ever need is set here, when
it is first declared, and every declaration of that queue goes through the same
function. The ``*_arguments`` functions are pure; ``declare_*`` do the I/O.

* Function queues: durable; classic by default (on one node a quorum queue pays an
  fsync per confirm), quorum selectable for clusters; rejected and expired messages
  dead-letter to ``warren.v1.dlx`` with the environment's dead-letter queue as key.
* Result queues: durable classic with ``x-expires``, so a client that disappears
  leaves nothing behind, while one that reconnects finds its results waiting. Each
  client also has a marker queue beside it, which tells it whether the broker
  restarted (:mod:`warren.client.restart_watch`).
* Spawned calls' result queues: durable classic, one per call, with ``x-expires`` and
  ``x-message-ttl`` both set to the result retention period.
* Dead-letter queue per environment: durable, messages kept for a week. Messages are
  put there with a ``x-warren-reason`` header saying why.
* Results travel through the ``warren.v1.replies`` exchange (direct), to which
  every result queue is bound under its own name: a container can answer a caller
  but has no way to publish into a function queue.
* Retries wait in ``delay.<ms>`` queues (one per delay, ``x-message-ttl``), reached
  through a headers exchange; expired messages dead-letter, with their original
  routing key (the function queue's name), to the ``requeue`` exchange, where every
  function queue is bound under its name. One whose function queue is gone (its app
  stopped meanwhile) goes to the ``orphans`` queue through the alternate exchange,
  and the engine answers its caller. An unused delay queue expires a minute after
  its last message.
* What functions print: one stream queue per environment (``logs``), fed by a fanout
  exchange of the same name to which containers may publish (and nothing else). It
  keeps a day of lines, 1 GiB at most; readers consume it from an offset (a time) with
  a prefetch and acknowledgements, as AMQP 0-9-1 requires of streams.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue

from warren.wire import naming

DEAD_LETTER_TTL_MS = 7 * 24 * 3600 * 1000
DELAY_QUEUE_LINGER_MS = 60_000
# Not "x-...": a headers exchange ignores binding arguments starting with "x-" (every
# message would match every delay queue).
DELAY_HEADER = "warren-delay"
REASON_HEADER = "x-warren-reason"
LOG_MAX_AGE = "1D"
LOG_MAX_BYTES = 1024**3
LOG_SEGMENT_BYTES = 16 * 1024**2


def function_queue_arguments(environment: str, queue_type: str) -> dict[str, Any]:
    return {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": naming.dead_letter_exchange(),
        "x-dead-letter-routing-key": naming.dead_letter_queue(environment),
    }


def result_queue_arguments(expiry_seconds: float) -> dict[str, Any]:
    return {"x-queue-type": "classic", "x-expires": int(expiry_seconds * 1000)}


def marker_queue_arguments(expiry_seconds: float) -> dict[str, Any]:
    # Classic: a quorum queue keeps every message on disk, and the marker must be lost
    # exactly when transient messages are.
    return {"x-queue-type": "classic", "x-expires": int(expiry_seconds * 1000)}


def call_queue_arguments(retention_seconds: float) -> dict[str, Any]:
    # The queue goes when unused for the retention period, its result message when it
    # has been there that long: nothing is left behind by results nobody fetches.
    retention_ms = max(1, int(retention_seconds * 1000))
    return {"x-queue-type": "classic", "x-expires": retention_ms, "x-message-ttl": retention_ms}


def dead_letter_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": "classic", "x-message-ttl": DEAD_LETTER_TTL_MS}


def delay_queue_arguments(environment: str, milliseconds: int) -> dict[str, Any]:
    return {
        "x-queue-type": "classic",
        "x-message-ttl": milliseconds,
        "x-dead-letter-exchange": naming.requeue_exchange(environment),
        "x-expires": milliseconds + DELAY_QUEUE_LINGER_MS,
    }


def log_stream_arguments() -> dict[str, Any]:
    # Segments far below the default 500 MB: retention drops whole segments, so a small
    # one lets age and size limits bite on a quiet environment too.
    return {
        "x-queue-type": "stream",
        "x-max-age": LOG_MAX_AGE,
        "x-max-length-bytes": LOG_MAX_BYTES,
        "x-stream-max-segment-size-bytes": LOG_SEGMENT_BYTES,
    }


async def declare_log_stream(channel: AbstractChannel, environment: str) -> AbstractQueue:
    """The environment's log stream, and the fanout exchange containers publish to."""
    name = naming.log_stream(environment)
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(name, durable=True, arguments=log_stream_arguments())
    await queue.bind(exchange)
    return queue


async def declare_requeue(channel: AbstractChannel, environment: str) -> AbstractQueue:
    """The requeue exchange, and the orphans queue its unroutable messages go to."""
    orphans = await channel.declare_exchange(
        naming.orphans(environment), aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await channel.declare_queue(naming.orphans(environment), durable=True)
    await queue.bind(orphans)
    await channel.declare_exchange(
        naming.requeue_exchange(environment),
        aio_pika.ExchangeType.DIRECT,
        durable=True,
        arguments={"alternate-exchange": naming.orphans(environment)},
    )
    return queue


async def declare_function_queue(
    channel: AbstractChannel, environment: str, name: str, queue_type: str
) -> AbstractQueue:
    """A function queue, bound to its environment's requeue exchange (declared already)."""
    queue = await channel.declare_queue(
        name, durable=True, arguments=function_queue_arguments(environment, queue_type)
    )
    await queue.bind(naming.requeue_exchange(environment), routing_key=name)
    return queue


async def declare_dead_letters(channel: AbstractChannel, environment: str) -> AbstractQueue:
    exchange = await channel.declare_exchange(
        naming.dead_letter_exchange(), aio_pika.ExchangeType.DIRECT, durable=True
    )
    queue = await channel.declare_queue(
        naming.dead_letter_queue(environment), durable=True, arguments=dead_letter_queue_arguments()
    )
    await queue.bind(exchange, routing_key=naming.dead_letter_queue(environment))
    return queue


async def declare_cancel_exchange(channel: AbstractChannel, environment: str) -> AbstractExchange:
    return await channel.declare_exchange(
        naming.cancel_exchange(environment), aio_pika.ExchangeType.FANOUT, durable=True
    )


async def subscribe_to_cancels(
    channel: AbstractChannel,
    environment: str,
    listener_id: str,
    on_cancel: Callable[[AbstractIncomingMessage], Awaitable[None]],
) -> None:
    """Receive the environment's cancel broadcasts on a queue of our own (gone with us).

    The engine declared the exchange when it started the app (a container has no right
    to declare one): here it is only looked up.
    """
    exchange = await channel.get_exchange(naming.cancel_exchange(environment), ensure=True)
    queue = await channel.declare_queue(
        naming.cancel_listener_queue(environment, listener_id), exclusive=True, auto_delete=True
    )
    await queue.bind(exchange)
    await queue.consume(on_cancel, no_ack=True)


async def declare_replies_exchange(channel: AbstractChannel) -> AbstractExchange:
    return await channel.declare_exchange(
        naming.replies_exchange(), aio_pika.ExchangeType.DIRECT, durable=True
    )


async def declare_delay_queue(
    channel: AbstractChannel, environment: str, milliseconds: int
) -> AbstractExchange:
    """The delay exchange, with a queue that holds messages for ``milliseconds``."""
    exchange = await channel.declare_exchange(
        naming.delay_exchange(environment), aio_pika.ExchangeType.HEADERS, durable=True
    )
    queue = await channel.declare_queue(
        naming.delay_queue(environment, milliseconds),
        durable=True,
        arguments=delay_queue_arguments(environment, milliseconds),
    )
    await queue.bind(exchange, arguments={"x-match": "all", DELAY_HEADER: str(milliseconds)})
    return exchange
