"""Queue and exchange arguments, decided once for the whole design.

RabbitMQ refuses to change a queue's arguments after it exists
(``PRECONDITION_FAILED``), so every argument a queue will ever need is set here, when
it is first declared, and every declaration of that queue goes through the same
function. The ``*_arguments`` functions are pure; ``declare_*`` do the I/O, and turn
the broker's refusal into :class:`~warren.exceptions.QueueMismatchError`, which names
the queue, what it is and what was asked, and how to get out.

* Function queues: durable; classic by default (on one node a quorum queue pays an
  fsync per confirm), quorum selectable for clusters; rejected and expired messages
  dead-letter to ``warren.v1.dlx`` with the environment's dead-letter queue as key.
* Result queues: durable with ``x-expires``, so a client that disappears
  leaves nothing behind, while one that reconnects finds its results waiting. Each
  client also has a marker queue beside it, which tells it whether the broker
  restarted (:mod:`warren.client.restart_watch`).
* Spawned calls' result queues: durable, one per call, with ``x-expires`` and
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

**With** ``WARREN_QUEUE_TYPE=quorum`` every queue that holds calls, results or state
is a quorum queue (the log stream is a stream either way), so that it survives the
loss of a broker node; the queues that live and die with one connection stay classic:

==========================  ========  ==================================================
queue                       quorum?   why
==========================  ========  ==================================================
function queue              quorum    holds calls
delay queue (retries)       quorum    holds calls during their backoff
orphans                     quorum    holds retries whose function queue went
client result queue         quorum    holds results (of ``remote``/``map`` calls)
spawned call's queue        quorum    holds a result for a retention period
dead-letter queue           quorum    holds what nothing runs any more, for a week
log stream                  stream    (already replicated)
marker queue                none      not declared: it tells a client that a restart
                                      lost its transient calls, and quorum queues keep
                                      every message (with classic queues it is classic)
lease queue                 classic   exclusive: exists while its client is connected
cancel listener queue       classic   exclusive, auto-delete: a broadcast subscription
engine control queues       classic   auto-delete (an environment's, shared by its
                                      nodes) or exclusive (a node's own, a run's): a
                                      request waits on no broker node's loss, its
                                      caller times out and asks again
node heartbeat queue        classic   exclusive: a node's subscription to the beats
registry stream             stream    the environment's deployed apps and secrets
leader queue                quorum    single active consumer; leadership must survive
                                      the loss of the broker node that held it
slots queue                 quorum    a bounded function's container tokens; no
                                      delivery limit (tokens go back and forth)
==========================  ========  ==================================================

Clients and engines must agree on ``WARREN_QUEUE_TYPE``: a client set to quorum trusts
the function queues to keep its calls through a restart.

Quorum queues cannot be exclusive, auto-delete or non-durable; they take ``x-expires``,
``x-message-ttl`` (3.10 and later), ``x-dead-letter-*`` and ``x-delivery-limit``.

**The delivery limit.** A quorum queue counts every return of a message (a consumer
gone, a ``nack`` with requeue) and at ``x-delivery-limit`` gives up on it. Warren bounds
the redeliveries it cares about itself: a message that was running when its container
died is judged by the engine's crash ledger and sent again as new messages (one input
each, counting from zero), until ``WARREN_CRASH_LIMIT`` sends it to the dead-letter
queue with its caller answered. What else returns a message is not a fault of the
input: a stopping container's prefetched messages, inputs handed back for another
container, a connection (or a broker node) lost. So the limit
(:data:`DELIVERY_LIMIT`, 1000) sits far above anything Warren's own handling reaches,
and is only a backstop against a loop Warren cannot see (a message that kills its
container before it is recorded, an engine that cannot judge): and what the broker
gives up on is dead-lettered, *at least once* (``x-dead-letter-strategy``, which needs
``x-overflow: reject-publish``; no Warren queue has a length limit), to the
environment's dead-letter queue, where ``warren dead list`` shows it with the broker's
reason. Two queues have no limit: a spawned call's queue, which ``FunctionCall.get``
reads by taking its result and putting it back (every read counts as a return, and a
result may be read any number of times) and whose expired result must simply go; and
the dead-letter queue, which readings take from and hand back as well, and which is
the end of the line.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelPreconditionFailed

from warren.exceptions import QueueMismatchError
from warren.wire import naming

CLASSIC = "classic"
QUORUM = "quorum"
DELIVERY_LIMIT = 1000
DEAD_LETTER_TTL_MS = 7 * 24 * 3600 * 1000
DELAY_QUEUE_LINGER_MS = 60_000
# Not "x-...": a headers exchange ignores binding arguments starting with "x-" (every
# message would match every delay queue).
DELAY_HEADER = "warren-delay"
REASON_HEADER = "x-warren-reason"
LOG_MAX_AGE = "1D"
LOG_MAX_BYTES = 1024**3
LOG_SEGMENT_BYTES = 16 * 1024**2


def _dead_letters(environment: str) -> dict[str, Any]:
    return {
        "x-dead-letter-exchange": naming.dead_letter_exchange(),
        "x-dead-letter-routing-key": naming.dead_letter_queue(environment),
    }


def _given_up(queue_type: str) -> dict[str, Any]:
    """What a quorum queue that holds calls or results adds: the broker's backstop
    against a redelivery loop, and at-least-once dead-lettering of what it gives up."""
    if queue_type != QUORUM:
        return {}
    return {
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def function_queue_arguments(environment: str, queue_type: str) -> dict[str, Any]:
    return {"x-queue-type": queue_type, **_dead_letters(environment), **_given_up(queue_type)}


def result_queue_arguments(
    expiry_seconds: float, queue_type: str = CLASSIC, environment: str = ""
) -> dict[str, Any]:
    """A client's result queue (``environment`` matters with quorum: where the broker's
    dead letters go)."""
    arguments: dict[str, Any] = {"x-queue-type": queue_type, "x-expires": _ms(expiry_seconds)}
    if queue_type == QUORUM:
        arguments |= _dead_letters(environment) | _given_up(queue_type)
    return arguments


def marker_queue_arguments(expiry_seconds: float) -> dict[str, Any]:
    # Classic whatever the queue type: a quorum queue keeps every message on disk, and
    # the marker must be lost exactly when transient messages are.
    return {"x-queue-type": CLASSIC, "x-expires": _ms(expiry_seconds)}


def call_queue_arguments(retention_seconds: float, queue_type: str = CLASSIC) -> dict[str, Any]:
    # The queue goes when unused for the retention period, its result message when it
    # has been there that long: nothing is left behind by results nobody fetches. No
    # delivery limit nor dead-lettering with quorum: each read puts the result back
    # (a return the broker counts), and an expired result is meant to go.
    retention_ms = _ms(retention_seconds)
    return {"x-queue-type": queue_type, "x-expires": retention_ms, "x-message-ttl": retention_ms}


def dead_letter_queue_arguments(queue_type: str = CLASSIC) -> dict[str, Any]:
    # No delivery limit with quorum: every reading takes its messages and hands them back.
    return {"x-queue-type": queue_type, "x-message-ttl": DEAD_LETTER_TTL_MS}


def delay_queue_arguments(
    environment: str, milliseconds: int, queue_type: str = CLASSIC
) -> dict[str, Any]:
    return {
        "x-queue-type": queue_type,
        "x-message-ttl": milliseconds,
        "x-dead-letter-exchange": naming.requeue_exchange(environment),
        "x-expires": milliseconds + DELAY_QUEUE_LINGER_MS,
        **_given_up(queue_type),
    }


def orphans_queue_arguments(environment: str, queue_type: str = CLASSIC) -> dict[str, Any]:
    # Classic: no arguments at all, as the queue has always been declared.
    if queue_type != QUORUM:
        return {}
    return {"x-queue-type": QUORUM, **_dead_letters(environment), **_given_up(queue_type)}


def log_stream_arguments() -> dict[str, Any]:
    # Segments far below the default 500 MB: retention drops whole segments, so a small
    # one lets age and size limits bite on a quiet environment too.
    return {
        "x-queue-type": "stream",
        "x-max-age": LOG_MAX_AGE,
        "x-max-length-bytes": LOG_MAX_BYTES,
        "x-stream-max-segment-size-bytes": LOG_SEGMENT_BYTES,
    }


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))  # RabbitMQ refuses an x-expires of 0


# -- a queue that exists with other arguments ---------------------------------------------

_VALUE = r"(?:none|(?:the value )?'(?P<{}>[^']*)'(?: of type '[^']*')?)"
_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<argument>[^']+)' for queue '[^']*' in vhost '[^']*': "
    rf"received {_VALUE.format('declared')} but current is {_VALUE.format('current')}"
)
# Arguments only a quorum queue has (of those Warren sets): a classic declaration of a
# quorum queue may be refused over one of these before its type is compared.
_STOPPING = "; stopping its app removes a function queue"
_QUORUM_ONLY = frozenset({"x-delivery-limit", "x-dead-letter-strategy", "x-overflow"})


def queue_mismatch(queue: str, queue_type: str, reply_text: str) -> QueueMismatchError:
    """The error for the broker's refusal (``reply_text``) to declare ``queue`` again, as
    a ``queue_type`` queue."""
    found = _INEQUIVALENT.search(reply_text)
    if found is None:
        return QueueMismatchError(f"RabbitMQ refused to declare queue {queue!r}: {reply_text}")
    argument, declared, current = found["argument"], found["declared"], found["current"]
    if argument == "x-queue-type" or (argument in _QUORUM_ONLY and queue_type == CLASSIC):
        is_function_queue = naming.function_of_queue(queue) is not None
        existing = (current or CLASSIC) if argument == "x-queue-type" else QUORUM
        return QueueMismatchError(
            f"queue {queue!r} exists as a {existing} queue, and Warren now declares it as a "
            f"{queue_type} queue (WARREN_QUEUE_TYPE={queue_type}); RabbitMQ cannot change a "
            f"queue's type. Either delete the queue once nothing in it is needed "
            f"(rabbitmqctl delete_queue {queue}{_STOPPING * is_function_queue}), or set "
            f"WARREN_QUEUE_TYPE={existing} again."
        )
    return QueueMismatchError(
        f"queue {queue!r} exists with {argument}={current or 'none'}, and Warren declares it "
        f"with {argument}={declared or 'none'}; RabbitMQ cannot change a queue's arguments. "
        f"Delete the queue once nothing in it is needed (rabbitmqctl delete_queue {queue}), "
        f"or run the Warren version and WARREN_QUEUE_TYPE that made it."
    )


async def _declare(channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> AbstractQueue:
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except ChannelPreconditionFailed as exc:
        queue_type = arguments.get("x-queue-type", CLASSIC)
        raise queue_mismatch(name, queue_type, str(exc)) from None


async def declare_log_stream(channel: AbstractChannel, environment: str) -> AbstractQueue:
    """The environment's log stream, and the fanout exchange containers publish to."""
    name = naming.log_stream(environment)
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await _declare(channel, name, log_stream_arguments())
    await queue.bind(exchange)
    return queue


async def declare_requeue(
    channel: AbstractChannel, environment: str, queue_type: str = CLASSIC
) -> AbstractQueue:
    """The requeue exchange, and the orphans queue its unroutable messages go to."""
    orphans = await channel.declare_exchange(
        naming.orphans(environment), aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await _declare(
        channel, naming.orphans(environment), orphans_queue_arguments(environment, queue_type)
    )
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
    queue = await _declare(channel, name, function_queue_arguments(environment, queue_type))
    await queue.bind(naming.requeue_exchange(environment), routing_key=name)
    return queue


async def declare_dead_letters(
    channel: AbstractChannel, environment: str, queue_type: str = CLASSIC
) -> AbstractQueue:
    exchange = await channel.declare_exchange(
        naming.dead_letter_exchange(), aio_pika.ExchangeType.DIRECT, durable=True
    )
    queue = await _declare(
        channel, naming.dead_letter_queue(environment), dead_letter_queue_arguments(queue_type)
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
    channel: AbstractChannel, environment: str, milliseconds: int, queue_type: str = CLASSIC
) -> AbstractExchange:
    """The delay exchange, with a queue that holds messages for ``milliseconds``."""
    exchange = await channel.declare_exchange(
        naming.delay_exchange(environment), aio_pika.ExchangeType.HEADERS, durable=True
    )
    queue = await _declare(
        channel,
        naming.delay_queue(environment, milliseconds),
        delay_queue_arguments(environment, milliseconds, queue_type),
    )
    await queue.bind(exchange, arguments={"x-match": "all", DELAY_HEADER: str(milliseconds)})
    return exchange
