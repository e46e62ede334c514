"""Failing queued inputs with a reason, so that no caller is left waiting.

RabbitMQ drops a deleted queue's messages silently. Before deleting a function queue
(its app stopped), and whenever its containers cannot start at all, the engine takes
every input still queued and answers it with an ``ExecutionError`` saying why, so
callers fail promptly instead of waiting forever.
"""

from __future__ import annotations

import contextlib

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelNotFoundEntity
from warren.exceptions import ExecutionError, WarrenError
from warren.wire import failure, naming
from warren.wire.protocol import KIND_CALLS, CallBatch, ResultBatch
from warren.wire.signing import Signer, result_validity

from warren_engine.publisher import BROKER_ERRORS, dead_letter

log = structlog.get_logger(__name__)


async def answer_queued(
    connection: AbstractRobustConnection,
    name: str,
    reason: str,
    sealer: Signer,
    *,
    delete: bool = False,
) -> int:
    """Answer every input queued in ``name`` with an error (then delete the queue, if asked);
    ``sealer`` checks the inputs and signs the answers.

    Returns how many inputs were answered.
    """
    # A channel of its own: a missing queue closes the channel that asked about it.
    async with connection.channel() as channel:
        try:
            queue = await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            return 0
        answered = 0
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            answered += await _answer(channel, message, name, reason, sealer)
            await message.ack()
        if delete:
            await queue.delete(if_unused=False, if_empty=False)
    return answered


async def answer_orphan(
    channel: AbstractChannel, message: AbstractIncomingMessage, sealer: Signer
) -> None:
    """A retry that came back from its delay to find its function queue gone: answered."""
    queue = message.routing_key or "an unknown queue"
    try:
        await _answer(channel, message, queue, f"{queue} was removed before the retry ran", sealer)
    except BROKER_ERRORS:
        with contextlib.suppress(*BROKER_ERRORS):
            await message.nack(requeue=True)
        raise
    await message.ack()


async def _answer(
    channel: AbstractChannel,
    message: AbstractIncomingMessage,
    queue: str,
    reason: str,
    sealer: Signer,
) -> int:
    try:
        batch = CallBatch.from_body(sealer.open_message(message, kind=KIND_CALLS).body)
    except WarrenError as exc:
        # Not answered (nobody vouches for its reply_to); kept with the reason instead.
        await dead_letter(
            channel, naming.environment_of(queue), message.body, reason=str(exc), source_queue=queue
        )
        return 0
    reply_to = message.reply_to
    if reply_to is None:
        return 0
    items = failure.error_results(batch, ExecutionError(f"the input was not run: {reason}"))
    await channel.default_exchange.publish(
        aio_pika.Message(
            sealer.seal(
                ResultBatch(items).to_envelope(),
                valid_for=result_validity(reply_to),
            ),
            type="results",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=reply_to,
    )
    return len(items)
