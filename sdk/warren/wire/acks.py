"""Acknowledging a consumer's deliveries in bulk.

One ``multiple`` acknowledgement covers every delivery before it on its channel, so
a consumer whose deliveries are handled in the order they arrive, and to the end
without waiting (a client's results), needs one acknowledgement for every few dozen
deliveries, or one a few milliseconds after the last. Deliveries left unacknowledged
by a lost connection come again, and whoever reads them drops their duplicates.
"""

from __future__ import annotations

import asyncio

from warren.wire.amqp import Channel, Delivery

ACK_EVERY = 64
ACK_DELAY = 0.02


class AckBatcher:
    def __init__(self, every: int = ACK_EVERY, delay: float = ACK_DELAY) -> None:
        self._every = every
        self._delay = delay
        self._channel: Channel | None = None
        self._tag = 0
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None

    def handled(self, delivery: Delivery) -> None:
        """This delivery (and every one before it on its channel) is handled."""
        if delivery.channel is not self._channel:
            self.flush()
            self._channel = delivery.channel
        self._tag = delivery.delivery_tag
        self._count += 1
        if self._count >= self._every:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._channel is not None and self._count:
            # Nothing to do on a channel that is gone: the broker requeued its deliveries.
            self._channel.ack(self._tag, multiple=True)
        self._count = 0
