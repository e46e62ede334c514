"""Spawned calls: ``f.spawn(...)`` and the ``FunctionCall`` that fetches their results.

A spawned call's result is kept in the broker, not in the process that spawned it: each
call gets a durable result queue (``warren.v1.<env>.call.<id>``) declared before its
input is published, and the container publishes the outcome there, persistently. Any
process holding the call's ``object_id`` can fetch it, any number of times: ``get``
takes the first message and puts it back. Results are kept for a retention period
counted from the spawn (``WARREN_RESULT_RETENTION``, default 24 hours); the queue and
its message expire on their own (``x-expires``, ``x-message-ttl``), so abandoned
results never pile up. ``cancel`` leaves a cancelled marker in the queue and tells the
containers to drop (or stop) the input.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar

import structlog

from warren.client.call_logs import OutputLine, call_lines
from warren.client.connection import Client
from warren.client.facade import IteratorMethod, Method
from warren.client.invocation import Target, encode_input, not_running, outcome, publish_cancel
from warren.client.publisher import Publisher
from warren.exceptions import (
    CallCancelledError,
    InvalidError,
    NotFoundError,
    ResultExpiredError,
    WarrenError,
)
from warren.wire import naming
from warren.wire.amqp import BrokerError, Channel, Delivery, NotFound
from warren.wire.protocol import KIND_RESULTS, STATUS_CANCELLED, CallBatch, ResultBatch
from warren.wire.signing import CALL_RESULT_VALIDITY, Signer

R_co = TypeVar("R_co", covariant=True)
log = structlog.get_logger(__name__)

_ID_PREFIX = "fc"
GATHER_WORKERS = 32


@dataclass(frozen=True, slots=True)
class CallRef:
    """Everything needed to find a spawned call's result, encoded in its object id."""

    environment: str
    call_id: str
    spawned_at: int
    retention: int

    @property
    def object_id(self) -> str:
        return f"{_ID_PREFIX}.{self.environment}.{self.call_id}.{self.spawned_at}.{self.retention}"

    @property
    def queue(self) -> str:
        return naming.call_queue(self.environment, self.call_id)

    @property
    def expires_at(self) -> int:
        return self.spawned_at + self.retention

    @classmethod
    def parse(cls, object_id: str) -> Self:
        parts = object_id.split(".") if isinstance(object_id, str) else []
        try:
            prefix, environment, call_id, spawned_at, retention = parts
            if prefix != _ID_PREFIX:
                raise ValueError(prefix)
            naming.check_part("environment", environment)
            naming.check_part("call id", call_id)
            return cls(environment, call_id, int(spawned_at), int(retention))
        except (ValueError, InvalidError):
            raise InvalidError(f"{object_id!r} is not a FunctionCall object id") from None


async def spawn_call(
    client: Client, target: Target, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> FunctionCall[Any]:
    fmt, data = encode_input(args, kwargs, target, client.signer.max_size)
    retention = max(1, round(client.settings.result_retention))
    ref = CallRef(target.environment, uuid.uuid4().hex, int(time.time()), retention)
    try:
        await client.publisher.publish(
            target.queue,
            CallBatch(ref.call_id, [(0, fmt, data)]).to_envelope(),
            correlation_id=ref.call_id,
            reply_to=ref.queue,
            valid_for=retention,
            # Declared before each attempt: a publish re-sent after a lost connection must
            # not find the result queue missing (a nowait declare may have been lost too).
            prepare=lambda channel: Publisher.declare_call_queue(
                channel, ref.queue, retention, client.settings.queue_type
            ),
        )
    except NotFoundError:
        await client.publisher.delete_queue(ref.queue)
        raise not_running(target) from None
    return FunctionCall(ref, target.display_name)


async def _gather(*calls: FunctionCall[Any]) -> list[Any]:
    """Results of several calls, in argument order; the first failure raises."""
    if not calls:
        return []
    client = await Client.current()
    results: list[Any] = [None] * len(calls)
    todo = iter(enumerate(calls))

    async def worker() -> None:
        # A few workers with a channel each, rather than a channel per call: a connection
        # has a few thousand channels at most, and opening one is a round trip.
        async with client.channel() as channel:
            for index, call in todo:
                results[index] = await call._get_on(client, channel, None)

    workers = [asyncio.ensure_future(worker()) for _ in range(min(len(calls), GATHER_WORKERS))]
    try:
        await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        for task in workers:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error
        return results
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


class ResultGet(Protocol[R_co]):
    """The type of ``call.get``: blocking, with an ``.aio`` twin."""

    def __call__(self, timeout: float | None = None) -> R_co: ...

    def aio(self, timeout: float | None = None) -> Coroutine[Any, Any, R_co]: ...


class FunctionCall(Generic[R_co]):
    """A handle on a spawned call. Its ``object_id`` can be stored and used elsewhere.

    Example::

        call = process.spawn(order_id)           # durably queued once this returns
        ...
        result = call.get(timeout=10)            # or, in any process:
        result = warren.FunctionCall.from_id(call.object_id).get()
    """

    gather = Method(_gather, "FunctionCall.gather")
    """Results of several calls in argument order; the first failure raises.

    ``warren.FunctionCall.gather(*calls)`` or ``await warren.FunctionCall.gather.aio(*calls)``.
    """

    def __init__(self, ref: CallRef, function_name: str | None = None) -> None:
        self._ref = ref
        self._function_name = function_name or f"spawned call {ref.call_id}"

    @property
    def object_id(self) -> str:
        return self._ref.object_id

    @classmethod
    def from_id(cls, object_id: str) -> FunctionCall[Any]:
        """The call with this ``object_id``, from any process."""
        return cls(CallRef.parse(object_id))

    @property
    def get(self) -> ResultGet[R_co]:
        """The call's value (or its exception), waiting for it.

        ``get(timeout=None)`` waits as long as it takes; with a timeout it raises
        ``TimeoutError`` if the result is not ready by then (``timeout=0`` only looks).
        Raises ``ResultExpiredError`` once the retention period has passed, and
        ``CallCancelledError`` for a cancelled call.
        """
        return Method(self._get, "FunctionCall.get")

    @property
    def logs(self) -> IteratorMethod[[], OutputLine]:
        """What the call printed and logged, as :class:`warren.OutputLine` items:
        ``for line in call.logs(): print(line.text)`` (``async for`` over ``.aio()``).

        Follows the call while it runs and ends once it has finished (with a value, an
        error or a cancel) and its last lines have arrived.
        """
        return IteratorMethod(self._logs, "FunctionCall.logs")

    async def _logs(self) -> AsyncIterator[list[OutputLine]]:
        client = await Client.current()
        ref = self._ref
        async for chunk in call_lines(
            client, ref.environment, ref.call_id, ref.spawned_at, self._get
        ):
            yield chunk

    @property
    def cancel(self) -> Method[[], None]:
        """Cancel the call: not run if still queued, stopped if running."""
        return Method(self._cancel, "FunctionCall.cancel")

    async def _get(self, timeout: float | None = None) -> R_co:
        client = await Client.current()
        async with client.channel() as channel:
            return await self._get_on(client, channel, timeout)

    async def _get_on(self, client: Client, channel: Channel, timeout: float | None) -> R_co:
        if timeout is not None and timeout < 0:
            raise InvalidError(f"timeout must be None or >= 0, got {timeout!r}")
        if time.time() >= self._ref.expires_at:
            with contextlib.suppress(BrokerError):
                await client.publisher.delete_queue(self._ref.queue)
            raise self._expired()
        status, fmt, data = await client.unless_broker_lost(
            self._fetch(channel, client.signer, timeout)
        )
        if status == STATUS_CANCELLED:
            raise CallCancelledError(f"{self._function_name} was cancelled")
        result: R_co = outcome(status, fmt, data, self._function_name)
        return result

    async def _fetch(
        self, channel: Channel, opener: Signer, timeout: float | None
    ) -> tuple[int, int, bytes]:
        # A plain basic.get first: most results fetched are already there, and it is one
        # round trip. A missing queue means the result is gone (this closes the channel).
        queue = self._ref.queue
        while True:
            try:
                message = await channel.get(queue)
            except NotFound:
                raise self._expired() from None
            if message is None:
                break
            if (found := _read_and_put_back(message, opener)) is not None:
                return found
        if timeout == 0:
            raise TimeoutError(f"{self._function_name} has no result yet")
        try:
            return await asyncio.wait_for(_first_message(channel, queue, opener), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self._function_name} has no result after {timeout:g}s") from None

    def _expired(self) -> ResultExpiredError:
        return ResultExpiredError(
            f"the result of {self._function_name} is gone: results are kept for "
            f"{self._ref.retention}s after the spawn (until {time.ctime(self._ref.expires_at)}), "
            "or this id was never spawned in this broker"
        )

    async def _cancel(self) -> None:
        client = await Client.current()
        marker = ResultBatch([(self._ref.call_id, 0, STATUS_CANCELLED, 0, b"", 0.0)])
        with contextlib.suppress(NotFoundError):  # its result already expired: nothing to do
            await client.publisher.publish(
                self._ref.queue,
                marker.to_envelope(),
                correlation_id=self._ref.call_id,
                valid_for=CALL_RESULT_VALIDITY,
            )
        await publish_cancel(client, self._ref.environment, [self._ref.call_id])

    def __repr__(self) -> str:
        return f"<warren.FunctionCall {self.object_id}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FunctionCall.from_id, (self.object_id,))


async def _first_message(channel: Channel, queue: str, opener: Signer) -> tuple[int, int, bytes]:
    """Consume until the first valid result, stop consuming, put it back for other readers."""
    await channel.qos(1)
    arrived: asyncio.Queue[Delivery] = asyncio.Queue()
    try:
        tag = await channel.consume(queue, arrived.put_nowait)
    except NotFound:
        raise ResultExpiredError(f"the result queue {queue!r} is gone") from None
    try:
        while True:
            if (found := _read_and_put_back(await arrived.get(), opener)) is not None:
                return found
    finally:
        with contextlib.suppress(BrokerError):
            await channel.cancel(tag)


def _read_and_put_back(message: Delivery, opener: Signer) -> tuple[int, int, bytes] | None:
    """The result a message holds, which stays in the queue; None for one that fails
    verification, which is taken off it so that it cannot hide the result behind it."""
    try:
        envelope = opener.open_message(message, kind=KIND_RESULTS)
        items = ResultBatch.from_body(envelope.body).items
        _, _, status, fmt, data, _ = items[0]
    except (WarrenError, ValueError, IndexError) as exc:
        log.warning("result_rejected", reason=str(exc), queue=message.routing_key)
        message.channel.ack(message.delivery_tag)
        return None
    message.channel.nack(message.delivery_tag, requeue=True)
    return status, fmt, data
