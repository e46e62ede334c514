"""Which node leads an environment: the broker's single active consumer.

What must happen once per environment, whatever the number of nodes (stopping an
ephemeral app whose client is gone, say), is done by its leader. Every node serving
the environment consumes ``warren.v1.<env>.leader``, a queue declared with
``x-single-active-consumer``: RabbitMQ delivers its messages to one consumer only, and
when that consumer's connection goes (its node died, or lost its path to the broker)
it makes the next one active at once. Every node sends a tick to the queue each
``TICK_SECONDS``; the active consumer gets them all, and a node leads while ticks reach
it. One that has had none for ``LEASE_SECONDS`` no longer leads: a node cut off from
the broker stops acting as leader within that time, while the broker has already made
another active. The leader's duties are made safe to run twice for the moments two
nodes overlap.

With ``WARREN_QUEUE_TYPE=quorum`` the queue is a quorum queue, so that leadership
survives the loss of the broker node that held it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from warren.wire import naming

log = structlog.get_logger(__name__)

TICK_SECONDS = 0.5
LEASE_SECONDS = 2.0


class Leadership:
    """Whether this node leads one environment."""

    def __init__(
        self, connection: AbstractRobustConnection, environment: str, node: str, queue_type: str
    ) -> None:
        self._connection = connection
        self.environment = environment
        self._node = node
        self._queue_type = queue_type
        self._last_tick = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._was_leading = False

    @property
    def leading(self) -> bool:
        leading = time.monotonic() - self._last_tick < LEASE_SECONDS
        if leading != self._was_leading:
            self._was_leading = leading
            event = "leadership_taken" if leading else "leadership_lost"
            log.info(event, environment=self.environment, node=self._node)
        return leading

    async def start(self) -> None:
        channel = await self._connection.channel()
        arguments: dict[str, object] = {"x-single-active-consumer": True}
        if self._queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        queue = await channel.declare_queue(
            naming.leader_queue(self.environment), durable=True, arguments=arguments
        )
        await queue.consume(self._on_tick, no_ack=True)
        self._task = asyncio.create_task(self._tick_forever(channel))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _on_tick(self, message: AbstractIncomingMessage) -> None:
        self._last_tick = time.monotonic()

    async def _tick_forever(self, channel: aio_pika.abc.AbstractChannel) -> None:
        name = naming.leader_queue(self.environment)
        while True:
            try:
                async with asyncio.timeout(LEASE_SECONDS):  # as the beats (membership)
                    await channel.default_exchange.publish(
                        aio_pika.Message(b"", expiration=LEASE_SECONDS), routing_key=name
                    )
            except asyncio.CancelledError:  # a call of a stuck connection, or ours
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            except Exception as exc:  # the connection is coming back
                log.debug("leader_tick_not_sent", reason=str(exc))
            self.leading  # noqa: B018 (logs a change of leader as it happens)
            await asyncio.sleep(TICK_SECONDS)
