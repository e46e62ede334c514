"""What a container does with cancel broadcasts: skip held inputs, stop running ones.

A cancel names whole invocations (a map, a spawned call) or single inputs of one
(``<invocation>/<index>``: one of the ``remote`` calls that share a client's call
stream). The container remembers the recent ones (the engine hands a new container
the recent ones too), skips held inputs of them when their turn comes, cancels
running async inputs of them, and, since a thread cannot be interrupted, exits to be
replaced when a cancelled sync input is still running after a grace period. Its
other unacknowledged inputs are then redelivered; the cancelled ones are skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from warren.exceptions import WarrenError
from warren.wire.amqp import Delivery
from warren.wire.protocol import KIND_CANCEL, Cancel, split_input_id
from warren.wire.signing import Signer

from warren_engine.container.executor import Executor, Job

REMEMBERED = 10_000
SYNC_CANCEL_GRACE = 1.0

Matches = Callable[[Job], bool]


def _bound(remembered: dict[Any, None]) -> None:
    while len(remembered) > REMEMBERED:
        del remembered[next(iter(remembered))]


class Cancels:
    def __init__(
        self, recent: tuple[str, ...], signer: Signer, log: structlog.typing.FilteringBoundLogger
    ) -> None:
        self._ids: dict[str, None] = {}
        self._inputs: dict[tuple[str, int], None] = {}
        self._remember(recent)
        self._signer = signer
        self._log = log
        self._executor: Executor | None = None
        self._replace: Callable[[], Awaitable[None]] | None = None
        self._running: list[Matches] = []
        self._replacing: asyncio.Task[None] | None = None

    def attach(self, executor: Executor, replace: Callable[[], Awaitable[None]]) -> None:
        """What to cancel inputs in, and how to have this container replaced."""
        self._executor = executor
        self._replace = replace

    def __contains__(self, invocation_id: Any) -> bool:
        """Whether this whole invocation is cancelled."""
        return invocation_id in self._ids

    def skips(self, job: Job) -> bool:
        """Whether this input is cancelled (its invocation, or it alone)."""
        return job.invocation_id in self._ids or (
            bool(self._inputs) and (job.invocation_id, job.index) in self._inputs
        )

    def _remember(self, ids: tuple[str, ...] | list[str]) -> tuple[set[str], set[tuple[str, int]]]:
        whole: set[str] = set()
        single: set[tuple[str, int]] = set()
        for entry in ids:
            one = split_input_id(entry)
            if one is None:
                self._ids[entry] = None
                whole.add(entry)
            else:
                self._inputs[one] = None
                single.add(one)
        _bound(self._ids)
        _bound(self._inputs)
        return whole, single

    def on_cancel(self, message: Delivery) -> None:
        try:
            cancel = Cancel.from_body(self._signer.open_message(message, kind=KIND_CANCEL).body)
        except WarrenError as exc:
            self._log.warning("cancel_rejected", reason=str(exc))
            return
        whole, single = self._remember(cancel.invocation_ids)

        def matches(job: Job) -> bool:
            return job.invocation_id in whole or (job.invocation_id, job.index) in single

        assert self._executor is not None
        stopped = self._executor.cancel(matches)
        if stopped:
            self._log.info("inputs_cancelled", running=stopped)
        if self._executor.running_sync(matches):
            self._running.append(matches)
            if self._replacing is None:
                self._replacing = asyncio.create_task(self._replace_if_still_running())

    async def _replace_if_still_running(self) -> None:
        # Cancels arriving meanwhile join the same check.
        assert self._executor is not None and self._replace is not None
        while self._running:
            await asyncio.sleep(SYNC_CANCEL_GRACE)
            checks, self._running = self._running, []
            if any(self._executor.running_sync(check) for check in checks):
                self._log.warning("container_replaced_to_cancel")
                await self._replace()
        self._replacing = None
