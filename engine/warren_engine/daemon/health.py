"""Whether an engine can do its work at this moment: what ``GET /healthz`` answers.

An orchestrator (a Kubernetes probe, a load balancer) asks it to decide whether to
send the engine traffic and whether to restart it. An engine is healthy while its
broker connection is up and its control plane consumes its control queue: without the
one it can neither answer nor run anything, without the other it hosts apps nobody can
reach. The answer carries no data, so the endpoint asks for no token.
"""

from __future__ import annotations

from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection


class Health:
    """The engine's broker connection and control channel, and whether it consumes yet."""

    def __init__(
        self, connection: AbstractRobustConnection, channel: AbstractRobustChannel
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._consuming = False

    def consuming(self) -> None:
        """The control plane consumes its queue (a robust channel consumes it again after a
        reconnection, so this is said once)."""
        self._consuming = True

    @property
    def ok(self) -> bool:
        # A robust connection clears ``connected`` the moment it loses the broker and
        # sets it again once it is back.
        return (
            self._consuming
            and self._connection.connected.is_set()
            and not self._connection.is_closed
            and not self._channel.is_closed
        )
