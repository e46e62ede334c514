"""The baseline: a bare aio-pika request/reply between two processes.

One message per call each way: the caller publishes with publisher confirms to a
queue, the responder (another process, prefetch 100) publishes the body back to the
caller's exclusive reply queue with confirms, then acknowledges. No signature, no
encoding, transient messages: what any task queue on RabbitMQ pays at the least.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aio_pika

PREFETCH = 100
T = TypeVar("T")
Call = Callable[[int], Awaitable[bytes]]


def _responder(url: str, queue: str, ready: Any) -> None:
    async def serve() -> None:
        connection = await aio_pika.connect(url)
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=PREFETCH)
        requests = await channel.declare_queue(queue, auto_delete=True)

        async def reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await channel.default_exchange.publish(
                aio_pika.Message(message.body, correlation_id=message.correlation_id),
                routing_key=message.reply_to or "",
            )
            await message.ack()

        await requests.consume(reply)
        ready.set()
        await asyncio.Future()

    asyncio.run(serve())


class BareRequestReply:
    """The responder process, and sessions of calls to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue = f"bench-bare-{uuid.uuid4().hex[:8]}"
        context = multiprocessing.get_context("spawn")
        self._ready = context.Event()
        self.process = context.Process(
            target=_responder, args=(url, self.queue, self._ready), daemon=True
        )

    def start(self) -> None:
        self.process.start()
        if not self._ready.wait(60):
            raise RuntimeError("the bare responder did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)

    async def session(self, work: Callable[[Call], Awaitable[T]]) -> T:
        """Connect, and run ``work`` with a ``call(i)`` that makes one request/reply."""
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            replies = await channel.declare_queue(exclusive=True)
            waiting: dict[str, asyncio.Future[bytes]] = {}

            async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                waiting.pop(message.correlation_id or "").set_result(message.body)

            await replies.consume(on_reply, no_ack=True)

            async def call(i: int) -> bytes:
                future = asyncio.get_running_loop().create_future()
                waiting[str(i)] = future
                await channel.default_exchange.publish(
                    aio_pika.Message(str(i).encode(), correlation_id=str(i), reply_to=replies.name),
                    routing_key=self.queue,
                )
                return await future

            return await work(call)
        finally:
            await connection.close()
