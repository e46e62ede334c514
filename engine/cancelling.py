"""What a container does with cancel broadcasts: skip queued inputs, stop running ones.

It remembers the recently cancelled invocations (the engine hands a new container
the recent ones too), cancels running async inputs of them, and, since a thread
cannot be interrupted, exits to be replaced when a cancelled sync input is still
running after a grace period. Its other unacknowledged inputs are then redelivered;
the cancelled ones are skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aio_pika.abc import AbstractIncomingMessage

from engine.execution import Executor
from sdk.exceptions import WarrenError
from sdk.protocol import KIND_CANCEL, Cancel
from sdk.signing import Signer

REMEMBERED = 10_000
SYNC_CANCEL_GRACE = 1.0


class Cancels:
    def __init__(
        self, recent: tuple[str, ...], signer: Signer, log: structlog.typing.FilteringBoundLogger
    ) -> None:
        self._ids: dict[str, None] = dict.fromkeys(recent)
        self._signer = signer
        self._log = log
        self._executor: Executor | None = None
        self._replace: Callable[[], Awaitable[None]] | None = None
        self._running: set[str] = set()
        self._replacing: asyncio.Task[None] | None = None

    def attach(self, executor: Executor, replace: Callable[[], Awaitable[None]]) -> None:
        """What to cancel inputs in, and how to have this container replaced."""
        self._executor = executor
        self._replace = replace

    def __contains__(self, invocation_id: Any) -> bool:
        return invocation_id in self._ids

    async def on_cancel(self, message: AbstractIncomingMessage) -> None:
        try:
            cancel = Cancel.from_body(self._signer.open_message(message, kind=KIND_CANCEL).body)
        except WarrenError as exc:
            self._log.warning("cancel_rejected", reason=str(exc))
            return
        for invocation_id in cancel.invocation_ids:
            self._ids[invocation_id] = None
        while len(self._ids) > REMEMBERED:
            del self._ids[next(iter(self._ids))]
        assert self._executor is not None
        ids = set(cancel.invocation_ids)
        stopped = self._executor.cancel(ids)
        if stopped:
            self._log.info("inputs_cancelled", running=stopped)
        if self._executor.running_sync(ids):
            self._running |= ids
            if self._replacing is None:
                self._replacing = asyncio.create_task(self._replace_if_still_running())

    async def _replace_if_still_running(self) -> None:
        # Cancels arriving meanwhile join the same check.
        assert self._executor is not None and self._replace is not None
        while self._running:
            await asyncio.sleep(SYNC_CANCEL_GRACE)
            ids, self._running = self._running, set()
            if self._executor.running_sync(ids):
                self._log.warning("container_replaced_to_cancel", invocations=sorted(ids))
                await self._replace()
        self._replacing = None
