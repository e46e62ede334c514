"""The ``remote`` calls one client makes to one function: a call stream that coalesces them.

Every ``remote`` call is an input of its client's *call stream* for that function:
one invocation id for the stream, one index per call. A lone call is published at
once, in the caller's own task, and waits for nothing else. Calls made while a
publish is in flight wait for it to be confirmed and then go out together, as few
messages as the function's batch sizer allows (the same sizing as a map's: fast
functions get hundreds of calls per message, slow ones one per message so that
they spread over the containers). An async service making thousands of concurrent
calls, or a thread pool, then sends a few messages instead of one per call.

A stream keeps each call's encoded input until its result arrives: the calls travel
as transient messages, and after a broker restart (:mod:`warren.client.restart_watch`) the stream
sends every call still waiting again. Cancelling one call (Ctrl-C, a cancelled task)
cancels that input alone.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import TYPE_CHECKING

from warren.client.batch_sizer import PROBE_WAIT, BatchSizer
from warren.client.invocation import Target, not_running, publish_cancel
from warren.exceptions import NotFoundError
from warren.wire.batching import ITEM_OVERHEAD, slices_within
from warren.wire.protocol import CallBatch, input_id
from warren.wire.signing import ENVELOPE_OVERHEAD

if TYPE_CHECKING:
    from warren.client.connection import Client

Raw = tuple[int, int, bytes]


CORES = os.cpu_count() or 1


def containers_of(target: Target) -> int:
    """How many containers may run the target's inputs, to spread them over (by default
    the engine makes one per core: this machine's count is the guess)."""
    return target.spec.max_containers or CORES


class _Call:
    __slots__ = ("data", "fmt", "future")

    def __init__(self, future: asyncio.Future[Raw], fmt: int, data: bytes) -> None:
        self.future = future
        self.fmt = fmt
        self.data = data


class CallStream:
    """A client's ``remote`` calls to one function queue (``json``: web endpoint calls)."""

    def __init__(self, client: Client, target: Target, json: bool, sizer: BatchSizer) -> None:
        self.invocation_id = uuid.uuid4().hex
        self._client = client
        self._target = target
        self._json = json
        self._sizer = sizer
        self._next = 0
        self._calls: dict[int, _Call] = {}
        self._waiting: list[int] = []
        self._busy = False  # a publish is in flight: new calls wait for it
        self._sender: asyncio.Task[None] | None = None
        self._learned = asyncio.Event()  # a result came: the sizer knows the run time
        client.add_sink(self.invocation_id, self)

    async def call(self, target: Target, fmt: int, data: bytes) -> Raw:
        """Publish one call (now, or with the next batch) and wait for its outcome."""
        self._target = target
        index = self._next
        self._next += 1
        future: asyncio.Future[Raw] = asyncio.get_running_loop().create_future()
        self._calls[index] = _Call(future, fmt, data)
        try:
            if self._busy:
                self._waiting.append(index)
            else:
                await self._publish_alone(index)
            return await future
        except asyncio.CancelledError:
            cancel = [input_id(self.invocation_id, index)]
            await asyncio.shield(publish_cancel(self._client, target.environment, cancel))
            raise
        finally:
            self._calls.pop(index, None)

    async def _publish_alone(self, index: int) -> None:
        self._busy = True
        try:
            await self._publish([index])
        except NotFoundError:
            raise not_running(self._target) from None
        finally:
            self._busy = False
            self._start_sender()

    def _start_sender(self) -> None:
        if self._waiting and not self._busy and (self._sender is None or self._sender.done()):
            self._busy = True
            self._sender = asyncio.get_running_loop().create_task(self._send_waiting())

    async def _send_waiting(self) -> None:
        """Publish what waits, round after round, until nothing does.

        Until the function's run time is known, only as many calls go out as the
        containers have slots; the others wait for the first result (warren.client.batch_sizer).
        """
        try:
            while self._waiting:
                waiting = [i for i in self._waiting if i in self._calls]
                in_flight = len(self._calls) - len(waiting)
                target = self._target
                count = self._sizer.sendable(
                    len(waiting), target.spec.max_inputs, containers_of(target), in_flight
                )
                indexes, self._waiting = waiting[:count], waiting[count:]
                if indexes:
                    await self._publish(indexes, fail_calls=True)
                elif self._waiting:
                    await self._await_first_result()
        finally:
            self._busy = False

    async def _await_first_result(self) -> None:
        if self._sizer.known:
            return
        self._learned.clear()
        try:
            await asyncio.wait_for(self._learned.wait(), PROBE_WAIT)
        except TimeoutError:
            self._sizer.at_least(PROBE_WAIT)

    async def _publish(self, indexes: list[int], *, fail_calls: bool = False) -> None:
        target = self._target
        calls = [(i, self._calls[i]) for i in indexes if i in self._calls]
        max_size = self._client.signer.max_size
        count = self._sizer.size(len(calls), target.spec.max_inputs, containers_of(target))
        sizes = [len(call.data) + ITEM_OVERHEAD for _, call in calls]
        slices = slices_within(sizes, count, max_size - ENVELOPE_OVERHEAD)
        messages = [
            CallBatch(
                self.invocation_id,
                [(i, call.fmt, call.data) for i, call in calls[start:end]],
                json_results=self._json,
            )
            for start, end in slices
        ]
        if len(messages) == 1:  # the common case: no task for one publish
            try:
                await self._publish_one(target, messages[0])
                outcomes: list[BaseException | None] = [None]
            except Exception as exc:
                outcomes = [exc]
        else:
            outcomes = await asyncio.gather(
                *(self._publish_one(target, batch) for batch in messages), return_exceptions=True
            )
        for batch, outcome in zip(messages, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                continue
            if not fail_calls:
                raise outcome
            error = not_running(target) if isinstance(outcome, NotFoundError) else outcome
            for i, _, _ in batch.inputs:
                call = self._calls.get(i)
                if call is not None and not call.future.done():
                    call.future.set_exception(error)

    async def _publish_one(self, target: Target, batch: CallBatch) -> None:
        await self._client.publisher.publish(
            target.queue,
            batch.to_envelope(),
            correlation_id=self.invocation_id,
            persistent=False,
        )

    # -- the client's side (a result sink) ------------------------------------------------

    def deliver(self, index: int, status: int, fmt: int, data: bytes, duration: float) -> bool:
        call = self._calls.get(index)
        if call is None or call.future.done():
            return False
        call.future.set_result((status, fmt, data))
        self._sizer.observe(duration)
        self._learned.set()
        return True

    def fail(self, exc: BaseException) -> None:
        for call in self._calls.values():
            if not call.future.done():
                call.future.set_exception(exc)

    def resend(self) -> None:
        """The broker restarted and lost what it held: send every waiting call again."""
        waiting = set(self._waiting)
        self._waiting.extend(i for i in self._calls if i not in waiting)
        self._start_sender()

    async def close(self) -> None:
        self._client.remove_sink(self.invocation_id)
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
