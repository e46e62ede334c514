"""Cancel broadcasts an engine hears, per environment, and its orphaned retries.

A cancel goes to every engine of an environment on a fanout exchange; the engine
remembers it (:mod:`warren_engine.pool.cancel_memory`) for its containers to skip
the inputs it names. Retries whose caller is gone come to the environment's orphans
queue, where the engine answers them (:mod:`warren_engine.daemon.failed_inputs`).
"""

from __future__ import annotations

import uuid

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from warren import exceptions
from warren.wire import naming, topology
from warren.wire.protocol import KIND_CANCEL, Cancel
from warren.wire.signing import Signer

from warren_engine.daemon.failed_inputs import answer_orphan
from warren_engine.pool.cancel_memory import CancelMemory

log = structlog.get_logger(__name__)


class CancelListener:
    def __init__(
        self, channel: AbstractRobustChannel, signer: Signer, cancels: CancelMemory
    ) -> None:
        self._channel = channel
        self._signer = signer
        self._cancels = cancels
        self._listening: set[str] = set()
        self._listener_id = f"engine-{uuid.uuid4().hex[:12]}"

    async def listen(self, environment: str) -> None:
        """Cancel broadcasts, and the environment's orphaned retries (to answer them)."""
        if environment in self._listening:
            return
        await topology.subscribe_to_cancels(
            self._channel, environment, self._listener_id, self._on_cancel
        )
        channel = self._channel
        orphans = await channel.get_queue(naming.orphans(environment), ensure=True)
        await orphans.consume(lambda message: answer_orphan(channel, message, self._signer))
        self._listening.add(environment)

    async def _on_cancel(self, message: AbstractIncomingMessage) -> None:
        try:
            cancel = Cancel.from_body(self._signer.open_message(message, kind=KIND_CANCEL).body)
            self._cancels.add(cancel.invocation_ids)
        except exceptions.WarrenError as exc:
            log.warning("cancel_rejected", reason=str(exc))
