"""``max_containers`` as an exact bound for the whole cluster: one slot per container.

A pool with ``max_containers`` set has a queue of slots,
``warren.v1.<env>.slots.<app>.<function>``, holding one token per container it may
run: ``max_containers`` of them, numbered. A node takes a token (``basic.get``, left
unacknowledged) before it starts a container and hands it back (``nack`` with requeue)
when that container has exited. So at most ``max_containers`` containers run at once
on all nodes together, whatever each node believes of the others. If a node dies, or
loses its path to the broker, its channel goes and the broker puts its tokens back at
once, for the survivors to take; a node whose channel went holds no token any more, and
stops the containers it cannot take one for again.

Tokens carry the deploy they belong to (``generation``, the app's ``deployed_at``) and
their number. A token of another deploy, or numbered past ``max_containers`` (lowered
by ``update_autoscaler``), is dropped when it is seen rather than handed back. The node
that takes a deploy, or an ``update_autoscaler`` that raises the bound, publishes the
tokens it adds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiormq.exceptions import ChannelInvalidStateError
from warren.wire import naming
from warren.wire.codec import packb, unpackb

log = structlog.get_logger(__name__)


def slots_arguments(queue_type: str) -> dict[str, Any]:
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else {}


async def declare_slots(channel: AbstractChannel, queue: str, queue_type: str) -> AbstractQueue:
    """The slots queue of the function queue ``queue``."""
    return await channel.declare_queue(
        naming.slots_queue(queue), durable=True, arguments=slots_arguments(queue_type)
    )


async def add_slots(
    channel: AbstractChannel,
    queue: str,
    queue_type: str,
    generation: float,
    numbers: range,
) -> None:
    """Publish the tokens ``numbers`` of deploy ``generation`` (``channel`` confirms)."""
    await declare_slots(channel, queue, queue_type)
    for number in numbers:
        await channel.default_exchange.publish(
            aio_pika.Message(
                packb([generation, number]), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            routing_key=naming.slots_queue(queue),
        )
    if numbers:
        log.info("slots_added", queue=queue, numbers=f"{numbers.start}..{numbers.stop - 1}")


async def remove_slots(channel: AbstractChannel, queue: str) -> None:
    with contextlib.suppress(Exception):
        await channel.queue_delete(naming.slots_queue(queue))


@dataclass(slots=True)
class Token:
    number: int
    message: AbstractIncomingMessage

    @property
    def held(self) -> bool:
        """Whether this node still holds it: not if the channel it came on has gone."""
        try:
            return not self.message.channel.is_closed
        except ChannelInvalidStateError:  # aio-pika's way of saying it is closed
            return False


class Slots:
    """One pool's side of its slots queue on this node."""

    def __init__(
        self,
        channel: AbstractChannel,
        queue: str,
        queue_type: str,
        generation: float,
        limit: Callable[[], int],
    ) -> None:
        self._channel = channel
        self._queue_name = queue
        self._queue_type = queue_type
        self.generation = generation
        self._limit = limit  # max_containers, as it is now
        self._queue: AbstractQueue | None = None

    async def take(self) -> Token | None:
        """A token, or None if all are taken (by this node or others)."""
        if self._queue is None or self._queue.channel.is_closed:
            self._queue = await declare_slots(self._channel, self._queue_name, self._queue_type)
        while True:
            message = await self._queue.get(no_ack=False, fail=False)
            if message is None:
                return None
            try:
                generation, number = unpackb(message.body)
            except (ValueError, TypeError):
                await message.ack()  # not a token: gone
                continue
            if generation != self.generation or number >= self._limit():
                await message.ack()  # of an older deploy, or past a lowered bound
                continue
            return Token(int(number), message)

    async def give_back(self, token: Token) -> None:
        """Hand a token back (dropped instead if the bound was lowered past it)."""
        if not token.held:
            return  # the broker put it back when its channel went
        try:
            if token.number >= self._limit():
                await token.message.ack()
            else:
                await token.message.nack(requeue=True)
        except Exception as exc:  # the channel is going: the broker puts it back
            log.debug("slot_not_given_back", reason=str(exc))
