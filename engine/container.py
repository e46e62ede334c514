"""A container: one OS process that runs one function's inputs from its queue.

:mod:`engine.container_main` runs it in a process of its own. It consumes the
function queue with a prefetch tuned to the batch sizes it receives
(:class:`~sdk.batching.PrefetchTuner`), starts the inputs of a message that fit in its
free slots and hands the rest back to the queue, so it never runs more than
``max_inputs`` at once, and publishes results to each message's ``reply_to`` in
batches. A message is
acknowledged only after the results of all its inputs are confirmed by the broker,
so a container that dies mid-call gets its inputs redelivered to another.

SIGTERM stops taking inputs, lets running ones finish (bounded by a grace period),
publishes their results, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError

from engine.execution import STATUS_ABANDONED, Executor, Job
from sdk import naming, topology
from sdk.batching import PrefetchTuner
from sdk.codec import unpack_envelope
from sdk.config import settings
from sdk.exceptions import WarrenError
from sdk.protocol import (
    KIND_CALLS,
    STATUS_CANCELLED,
    CallBatch,
    Cancel,
    FunctionSpec,
    ResultBatch,
    ResultItem,
)

log = structlog.get_logger(__name__)

MAX_RESULTS_PER_MESSAGE = 1000
CANCELLED_MEMORY = 10_000
EXIT_BAD_CODE = 3
EXIT_REPLACED = 4
SYNC_CANCEL_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    broker_url: str
    environment: str
    instance: str
    queue: str
    spec: FunctionSpec
    code_path: str
    container_id: str
    sys_path: tuple[str, ...] = ()
    cancelled: tuple[str, ...] = ()

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ContainerConfig:
        return cls(
            broker_url=data["broker_url"],
            environment=data["environment"],
            instance=data["instance"],
            queue=data["queue"],
            spec=FunctionSpec.from_wire(data["spec"]),
            code_path=data["code_path"],
            container_id=data["container_id"],
            sys_path=tuple(data.get("sys_path", ())),
            cancelled=tuple(data.get("cancelled", ())),
        )


class _Delivery:
    """A message whose inputs are running; acknowledged when the last result is confirmed.

    If any of its inputs was abandoned (the container stopped before it finished), the
    message is requeued instead: all its inputs run again elsewhere, and the client
    drops the results it already has.
    """

    __slots__ = ("abandoned", "message", "pending", "reply_to")

    def __init__(self, message: AbstractIncomingMessage, pending: int) -> None:
        self.message = message
        self.pending = pending
        self.reply_to = message.reply_to
        self.abandoned = False


class Container:
    def __init__(
        self,
        config: ContainerConfig,
        fn: Callable[..., Any],
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self._fn = fn
        self._on_ready = on_ready
        self._stop = asyncio.Event()
        self._connection: AbstractRobustConnection | None = None
        self._results: AbstractRobustChannel | None = None
        self._executor: Executor | None = None
        self._outbox: list[tuple[ResultItem | None, _Delivery]] = []
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        self._cancelled: dict[str, None] = dict.fromkeys(config.cancelled)
        self._replacing: asyncio.Task[None] | None = None
        self._cancelled_running: set[str] = set()
        self._exiting: asyncio.Task[None] | None = None
        self._inputs: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag = ""
        self._resubscribing = asyncio.Lock()
        self._held = 0
        self.last_active = time.monotonic()
        self._tuner = PrefetchTuner(config.spec.max_inputs)
        self._log = log.bind(container=config.container_id, function=config.spec.tag)

    @property
    def held(self) -> int:
        """Inputs started and not yet finished."""
        return self._held

    @property
    def mean_batch(self) -> float:
        """Mean inputs per message received: how the engine turns queue depth into inputs."""
        return self._tuner.mean_size

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self._executor = Executor(
            self._fn, self.config.spec, self._on_done, on_stuck=self._replace_soon
        )
        self._connection = await aio_pika.connect_robust(
            self.config.broker_url,
            client_properties={"connection_name": f"container-{self.config.container_id}"},
        )
        self._results = await self._connection.channel(publisher_confirms=True)
        inputs = self._inputs = await self._connection.channel()
        await inputs.set_qos(prefetch_count=self._tuner.prefetch)
        queue = self._queue = await inputs.declare_queue(self.config.queue, passive=True)
        # Its own channel: the input channel's prefetch limit must never hold back a cancel.
        await topology.subscribe_to_cancels(
            await self._connection.channel(),
            self.config.environment,
            self.config.container_id,
            self._on_cancel,
        )
        self._consumer_tag = await queue.consume(self._on_input)
        self._log.info("container_started", pid=os.getpid(), queue=self.config.queue)
        self._on_ready()
        try:
            await self._stop.wait()
        finally:
            async with self._resubscribing:  # no new consumer may appear after this
                with contextlib.suppress(AMQPError, RuntimeError):
                    await queue.cancel(self._consumer_tag)
            await self._finish()

    async def _finish(self) -> None:
        assert self._executor is not None
        if not await self._executor.wait_idle(settings().stop_grace):
            self._log.warning("container_stop_grace_exceeded", running=self._executor.running)
        await self._executor.close()
        while self._flushes or self._outbox:
            self._start_flush()
            await asyncio.gather(*self._flushes, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()
        self._log.info("container_stopped")

    async def _on_cancel(self, message: AbstractIncomingMessage) -> None:
        try:
            cancel = Cancel.from_body(unpack_envelope(message.body).body)
        except WarrenError as exc:
            self._log.warning("cancel_rejected", reason=str(exc))
            return
        for invocation_id in cancel.invocation_ids:
            self._cancelled[invocation_id] = None
        while len(self._cancelled) > CANCELLED_MEMORY:
            del self._cancelled[next(iter(self._cancelled))]
        assert self._executor is not None
        ids = set(cancel.invocation_ids)
        stopped = self._executor.cancel(ids)
        if stopped:
            self._log.info("inputs_cancelled", running=stopped)
        if self._executor.running_sync(ids):
            self._cancelled_running |= ids
            if self._replacing is None:
                self._replacing = asyncio.create_task(self._replace_if_still_running())

    async def _replace_if_still_running(self) -> None:
        # A thread cannot be interrupted: if a cancelled sync input is still running after
        # a grace period, this container exits and the pool starts a fresh one. Its other
        # unacknowledged inputs are redelivered; the cancelled ones are skipped, since the
        # engine hands its new containers the ids of recent cancels. Cancels arriving
        # meanwhile join the same check.
        assert self._executor is not None
        while self._cancelled_running:
            await asyncio.sleep(SYNC_CANCEL_GRACE)
            ids, self._cancelled_running = self._cancelled_running, set()
            if self._executor.running_sync(ids):
                self._log.warning("container_replaced_to_cancel", invocations=sorted(ids))
                await self._exit_for_replacement()
        self._replacing = None

    def _replace_soon(self) -> None:
        """A sync input ran past its timeout: publish what is done, then exit for a new one."""
        if self._exiting is None:
            self._log.warning("container_replaced_after_timeout")
            self._exiting = asyncio.get_running_loop().create_task(self._exit_for_replacement())

    async def _exit_for_replacement(self) -> None:
        # Results already computed (the timeout errors among them) are published and
        # their messages acknowledged first; other unfinished inputs are redelivered.
        await asyncio.sleep(0)
        self._start_flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._flushes, return_exceptions=True), 5)
        os._exit(EXIT_REPLACED)

    async def _on_input(self, message: AbstractIncomingMessage) -> None:
        if self._stop.is_set():
            await message.nack(requeue=True)
            return
        try:
            envelope = unpack_envelope(message.body)
            if envelope.kind != KIND_CALLS:
                raise WarrenError(f"unexpected message kind {envelope.kind!r}")
            batch = CallBatch.from_body(envelope.body)
        except WarrenError as exc:
            # Dead-lettered with the reason logged: never executed, never answered.
            self._log.error("input_rejected", reason=str(exc), message_id=message.message_id)
            await message.reject(requeue=False)
            return
        if batch.invocation_id in self._cancelled or not batch.inputs:
            await message.ack()
            return
        await self._take(message, batch)

    async def _take(self, message: AbstractIncomingMessage, batch: CallBatch) -> None:
        """Start what fits in the free slots; hand the rest back to the queue."""
        free = max(0, self.config.spec.max_inputs - self._held)
        start, rest = batch.inputs[:free], batch.inputs[free:]
        delivery = _Delivery(message, len(start) + (1 if rest else 0))
        self._held += len(start)
        assert self._executor is not None
        for index, fmt, data in start:
            self._executor.submit(Job(batch.invocation_id, index, fmt, data, delivery))
        new_prefetch = self._tuner.observe(len(batch.inputs))
        if new_prefetch is not None:
            await self._resubscribe(new_prefetch)
        if rest:
            await self._hand_back(delivery, CallBatch(batch.invocation_id, rest))

    async def _resubscribe(self, prefetch: int) -> None:
        # Per-consumer prefetch (a channel-wide one costs RabbitMQ a third of a
        # millisecond per message) applies to consumers made after it is set: so a new
        # consumer takes over, then the old one is cancelled. Its unacknowledged
        # messages stay with the channel and are settled as usual.
        assert self._inputs is not None and self._queue is not None
        async with self._resubscribing:
            if self._stop.is_set():
                return
            await self._inputs.set_qos(prefetch_count=prefetch)
            previous, self._consumer_tag = (
                self._consumer_tag,
                await self._queue.consume(self._on_input),
            )
            await self._queue.cancel(previous)

    async def _hand_back(self, delivery: _Delivery, rest: CallBatch) -> None:
        # Published (and confirmed) before the original message is acknowledged: a crash
        # in between runs those inputs twice, never zero times.
        assert self._results is not None
        message = delivery.message
        try:
            await self._results.default_exchange.publish(
                aio_pika.Message(
                    rest.to_envelope().pack(),
                    correlation_id=message.correlation_id,
                    reply_to=message.reply_to,
                    type=message.type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=self.config.queue,
            )
        except AMQPError as exc:
            self._log.warning("inputs_not_handed_back", reason=str(exc), inputs=len(rest.inputs))
            with contextlib.suppress(AMQPError, RuntimeError):
                await message.nack(requeue=True)  # the whole message runs again elsewhere
            return
        await self._settle(delivery)

    async def _settle(self, delivery: _Delivery) -> None:
        delivery.pending -= 1
        if delivery.pending == 0 and not delivery.message.processed:
            if delivery.abandoned:
                await delivery.message.nack(requeue=True)
            else:
                await delivery.message.ack()

    def _on_done(self, job: Job, status: int, fmt: int, data: bytes, seconds: float) -> None:
        self._held -= 1
        self.last_active = time.monotonic()
        item: ResultItem | None = None
        if status == STATUS_ABANDONED:
            job.delivery.abandoned = True
        elif status != STATUS_CANCELLED:
            item = (job.invocation_id, job.index, status, fmt, data, seconds)
        self._outbox.append((item, job.delivery))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        task = asyncio.get_running_loop().create_task(self._flush(outbox))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, outbox: list[tuple[ResultItem | None, _Delivery]]) -> None:
        by_reply: dict[str | None, list[ResultItem]] = {}
        for item, delivery in outbox:
            if item is not None:
                by_reply.setdefault(delivery.reply_to, []).append(item)
        try:
            for reply_to, items in by_reply.items():
                if reply_to is not None:
                    await self._publish_results(reply_to, items)
            for _, delivery in outbox:
                await self._settle(delivery)
        except (AMQPError, RuntimeError) as exc:
            # The inputs run again (here or elsewhere) and the client drops duplicates.
            self._log.warning("results_not_published", reason=str(exc), results=len(outbox))
            for _, delivery in outbox:
                if not delivery.message.processed:
                    with contextlib.suppress(AMQPError, RuntimeError):
                        await delivery.message.nack(requeue=True)

    async def _publish_results(self, reply_to: str, items: list[ResultItem]) -> None:
        assert self._results is not None
        for start in range(0, len(items), MAX_RESULTS_PER_MESSAGE):
            chunk = items[start : start + MAX_RESULTS_PER_MESSAGE]
            body = ResultBatch(chunk).to_envelope().pack()
            # A spawned call's result is kept in the broker for later: it must survive a restart.
            durable = naming.is_call_queue(reply_to)
            await self._results.default_exchange.publish(
                aio_pika.Message(
                    body,
                    type="results",
                    correlation_id=chunk[0][0],
                    delivery_mode=(
                        aio_pika.DeliveryMode.PERSISTENT
                        if durable
                        else aio_pika.DeliveryMode.NOT_PERSISTENT
                    ),
                ),
                routing_key=reply_to,
            )
