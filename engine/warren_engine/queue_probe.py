"""Looking at queues on the broker: whether one exists, and how many messages it holds.

A passive declare of a queue that does not exist closes the channel that asked, so
the probe keeps a channel of its own and opens a new one after such an answer.
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.exceptions import ChannelLockedResource, ChannelNotFoundEntity


class QueueProbe:
    def __init__(self, connection: AbstractRobustConnection) -> None:
        self._connection = connection
        self._channel: AbstractRobustChannel | None = None
        self._lock = asyncio.Lock()

    async def depth(self, name: str) -> int:
        """Messages ready in a queue (0 if it does not exist)."""
        return (await self.look(name))[1]

    async def look(self, name: str) -> tuple[bool, int]:
        """Whether a queue exists, and its ready messages; an exclusive one counts as existing."""
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                self._channel = await self._connection.channel()
            underlay = await self._channel.get_underlay_channel()
            try:
                declared = await underlay.queue_declare(queue=name, passive=True)
            except ChannelNotFoundEntity:
                self._channel = None  # the broker closed that channel
                return False, 0
            except ChannelLockedResource:
                self._channel = None
                return True, 0
            return True, declared.message_count or 0

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
