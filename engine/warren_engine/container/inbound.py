"""A message delivered to a container, settled at most once.

The container reads its function queue through Warren's own AMQP driver
(:mod:`warren.wire.amqp`). :class:`Inbound` keeps a delivery with what the container needs of
it (its body and the properties the signature covers) and settles it once: a second
acknowledgement of one delivery would make the broker close the channel. A message
is settled on the channel it came on; if that channel is gone, the broker has put it
back in its queue already, and settling it does nothing.
"""

from __future__ import annotations

from warren.wire.amqp import Delivery


class Inbound:
    __slots__ = ("delivery", "processed")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.processed = False

    @property
    def body(self) -> bytes:
        return self.delivery.body

    @property
    def message_id(self) -> str | None:
        return self.delivery.properties.message_id

    @property
    def correlation_id(self) -> str | None:
        return self.delivery.properties.correlation_id

    @property
    def reply_to(self) -> str | None:
        return self.delivery.properties.reply_to

    @property
    def type(self) -> str | None:
        return self.delivery.properties.message_type

    @property
    def redelivered(self) -> bool:
        return self.delivery.redelivered

    @property
    def routing_key(self) -> str:
        return self.delivery.routing_key

    def ack(self, *, lazy: bool = False) -> None:
        """``lazy``: the acknowledgement may wait a few milliseconds for the next write."""
        if not self.processed:
            self.processed = True
            self.delivery.channel.ack(self.delivery.delivery_tag, lazy=lazy)

    def nack(self, requeue: bool = True) -> None:
        if not self.processed:
            self.processed = True
            self.delivery.channel.nack(self.delivery.delivery_tag, requeue=requeue)

    def reject(self, requeue: bool = False) -> None:
        if not self.processed:
            self.processed = True
            self.delivery.channel.reject(self.delivery.delivery_tag, requeue=requeue)
