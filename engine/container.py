"""A container: one OS process that runs one function's inputs from its queue.

:mod:`engine.container_main` runs it in a process of its own. It consumes the
function queue with a prefetch tuned to the batch sizes it receives
(:class:`~sdk.batching.PrefetchTuner`), verifies each message's signature before
anything else (:mod:`engine.triage` dead-letters what fails, and counts crashes of
redelivered messages), starts the inputs of a message that fit in its free slots and
has the engine hand the rest back to the queue, so it never runs more than
``max_inputs`` at once. Results leave through :mod:`engine.outbox`; a message is
acknowledged only after the results of all its inputs are confirmed by the broker,
so a container that dies mid-call gets its inputs redelivered to another. Before
running a message it tells the engine (``took``), so the engine knows what was
running if the process dies.

SIGTERM stops taking inputs, lets running ones finish (bounded by a grace period),
publishes their results, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from engine.cancelling import Cancels
from engine.crashes import CRASHED, REPLACED
from engine.execution import STATUS_ABANDONED, Executor, Job
from engine.link import EngineLink
from engine.outbox import Delivery, Outbox
from engine.triage import Triage
from sdk import naming, topology
from sdk.batching import PrefetchTuner
from sdk.config import RECONNECT_INTERVAL, settings
from sdk.exceptions import EngineError, WarrenError
from sdk.protocol import (
    KIND_CALLS,
    STATUS_CANCELLED,
    STATUS_ERROR,
    CallBatch,
    FunctionSpec,
)
from sdk.publisher import BROKER_ERRORS
from sdk.signing import ENVELOPE_OVERHEAD, MessageExpiredError, signer

log = structlog.get_logger(__name__)

EXIT_BAD_CODE = 3
EXIT_REPLACED = 4
REPLACEMENT_FLUSH_SECONDS = 5.0
SUSPECT_RETRY_DELAY = 1.0


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
    environ: dict[str, str | None] = field(default_factory=dict, repr=False)
    volumes: dict[str, tuple[str, str]] = field(default_factory=dict)

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
            environ=dict(data.get("environ", {})),
            volumes={path: (v[0], v[1]) for path, v in data.get("volumes", {}).items()},
        )


class Container:
    def __init__(
        self,
        config: ContainerConfig,
        fn: Callable[..., Any],
        link: EngineLink,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self._fn = fn
        self._link = link
        self._on_ready = on_ready
        self._stop = asyncio.Event()
        self._signer = signer()
        self._log = log.bind(container=config.container_id, function=config.spec.tag)
        self._outbox = Outbox(config.spec, self._signer, link, self._report_released)
        self._triage = Triage(
            environment=config.environment,
            function=config.spec.tag,
            crash_limit=settings().crash_limit,
            signer=self._signer,
            link=link,
            outbox=self._outbox,
            log=self._log,
        )
        self._connection: AbstractRobustConnection | None = None
        self._executor: Executor | None = None
        self._cancels = Cancels(config.cancelled, self._signer, self._log)
        self._exiting: asyncio.Task[None] | None = None
        self._inputs: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag = ""
        self._resubscribing = asyncio.Lock()
        self._held = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._gate = asyncio.Event()  # cleared while a suspect input runs alone
        self._gate.set()
        self._isolation = asyncio.Lock()
        self.last_active = time.monotonic()
        self._tuner = PrefetchTuner(config.spec.max_inputs)

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
            self._fn,
            self.config.spec,
            self._on_done,
            on_stuck=self._replace_soon,
            max_result_size=self._signer.max_size - ENVELOPE_OVERHEAD,
        )
        self._cancels.attach(self._executor, self._exit_for_replacement)
        self._connection = await aio_pika.connect_robust(
            self.config.broker_url,
            reconnect_interval=RECONNECT_INTERVAL,
            client_properties={"connection_name": f"container-{self.config.container_id}"},
        )
        # Deliveries die with their connection (the broker requeues them): the engine's
        # crash ledger must not wait for this container to exit when they are redelivered.
        self._connection.close_callbacks.add(self._on_connection_lost)
        results = await self._connection.channel(publisher_confirms=True)
        self._outbox.open(results, naming.replies_exchange())
        inputs = self._inputs = await self._connection.channel()
        inputs.close_callbacks.add(self._on_inputs_closed)
        await inputs.set_qos(prefetch_count=self._tuner.prefetch)
        queue = self._queue = await inputs.declare_queue(self.config.queue, passive=True)
        # Its own channel: the input channel's prefetch limit must never hold back a cancel.
        await topology.subscribe_to_cancels(
            await self._connection.channel(),
            self.config.environment,
            self.config.container_id,
            self._cancels.on_cancel,
        )
        self._consumer_tag = await queue.consume(self._on_input)
        self._log.info("container_started", pid=os.getpid(), queue=self.config.queue)
        self._on_ready()
        try:
            await self._stop.wait()
        finally:
            async with self._resubscribing:  # no new consumer may appear after this
                with contextlib.suppress(*BROKER_ERRORS):
                    await queue.cancel(self._consumer_tag)
            await self._finish()

    async def _finish(self) -> None:
        assert self._executor is not None
        if not await self._executor.wait_idle(settings().stop_grace):
            self._log.warning("container_stop_grace_exceeded", running=self._executor.running)
        await self._executor.close()
        await self._outbox.drain()
        if self._connection is not None:
            await self._connection.close()
        self._log.info("container_stopped")

    def _on_connection_lost(self, *_: Any) -> None:
        if not self._stop.is_set():
            self._log.warning("broker_connection_lost")
            with contextlib.suppress(OSError):
                self._link.send({"event": "dropped"})

    def _on_inputs_closed(self, _sender: Any, exc: BaseException | None = None) -> None:
        if exc is not None and "acknowledgement" in str(exc):
            self._log.error(
                "broker_consumer_timeout_exceeded",
                reason=str(exc),
                hint="an input ran longer than the broker's consumer_timeout: raise it "
                "(broker_config/rabbitmq.conf) and set WARREN_BROKER_CONSUMER_TIMEOUT to match",
            )

    def _replace_soon(self) -> None:
        """A sync input ran past its timeout: publish what is done, then exit for a new one."""
        if self._exiting is None:
            self._log.warning("container_replaced_after_timeout")
            self._exiting = asyncio.get_running_loop().create_task(self._exit_for_replacement())

    async def _exit_for_replacement(self) -> None:
        # Results already computed (the timeout errors among them) and retries are
        # published and their messages acknowledged first; other unfinished inputs are
        # redelivered. The engine knows this exit code: not a crash.
        await asyncio.sleep(0)
        await self._outbox.drain(REPLACEMENT_FLUSH_SECONDS)
        os._exit(EXIT_REPLACED)

    # -- intake --------------------------------------------------------------------------

    async def _on_input(self, message: AbstractIncomingMessage) -> None:
        if self._stop.is_set():
            with contextlib.suppress(*BROKER_ERRORS):
                await message.nack(requeue=True)
            return
        try:
            envelope = self._signer.open_message(message, kind=KIND_CALLS)
            batch = CallBatch.from_body(envelope.body)
        except MessageExpiredError as exc:
            await self._triage.expired(message, exc)
            return
        except WarrenError as exc:
            await self._triage.reject(message, str(exc))
            return
        if batch.invocation_id in self._cancels or not batch.inputs:
            with contextlib.suppress(*BROKER_ERRORS):
                await message.ack()
            return
        verdict = await self._triage.verdict(message)
        if verdict == REPLACED:
            with contextlib.suppress(*BROKER_ERRORS):
                await message.ack()
            return
        if verdict == CRASHED:
            await self._triage.after_crash(message, batch, envelope.expires_at)
            return
        if batch.crashes:
            await self._take_alone(message, batch, envelope.expires_at)
            return
        if not self._gate.is_set():
            # A suspect runs alone here for now: this one goes to another container.
            with contextlib.suppress(*BROKER_ERRORS):
                await message.nack(requeue=True)
            return
        self._report("took", message)
        await self._take(message, batch, envelope.expires_at)

    async def _take_alone(
        self, message: AbstractIncomingMessage, batch: CallBatch, expires_at: int
    ) -> None:
        """Run an input that was running when a container died with nothing beside it.

        Then if it kills this container too, no other input is charged with the crash.
        A container that is busy does not hold it (its delivery would wait unacknowledged
        for the running inputs): it goes back to the queue after a second.
        """
        if self._isolation.locked() or self._held or self._outbox.busy:
            try:
                await self._outbox.requeue(
                    message, [batch], SUSPECT_RETRY_DELAY, expires_at=expires_at
                )
            except (EngineError, *BROKER_ERRORS):
                with contextlib.suppress(*BROKER_ERRORS):
                    await message.nack(requeue=True)
                return
            with contextlib.suppress(*BROKER_ERRORS):
                await message.ack()
            return
        async with self._isolation:
            self._gate.clear()
            await self._pause_intake()
            try:
                self._report("took", message)
                await self._take(message, batch, expires_at)
                await self._quiet()
            finally:
                self._gate.set()
                await self._resume_intake()

    async def _pause_intake(self) -> None:
        assert self._queue is not None
        async with self._resubscribing:
            with contextlib.suppress(*BROKER_ERRORS):
                await self._queue.cancel(self._consumer_tag)

    async def _resume_intake(self) -> None:
        assert self._queue is not None
        async with self._resubscribing:
            if not self._stop.is_set():
                self._consumer_tag = await self._queue.consume(self._on_input)

    async def _quiet(self) -> None:
        """Until nothing runs and every message taken is settled (the ledger holds none)."""
        await self._idle.wait()
        await self._outbox.drain()

    async def _take(
        self, message: AbstractIncomingMessage, batch: CallBatch, expires_at: int
    ) -> None:
        """Start what fits in the free slots; hand the rest back to the queue."""
        free = max(0, self.config.spec.max_inputs - self._held)
        start, rest = batch.inputs[:free], batch.inputs[free:]
        delivery = Delivery(message, batch, len(start) + (1 if rest else 0), expires_at)
        self._held += len(start)
        if self._held:
            self._idle.clear()
        assert self._executor is not None
        for index, fmt, data in start:
            self._executor.submit(
                Job(batch.invocation_id, index, fmt, data, delivery, json=batch.json_results)
            )
        new_prefetch = self._tuner.observe(len(batch.inputs))
        if new_prefetch is not None:
            await self._resubscribe(new_prefetch)
        if rest:
            await self._hand_back(delivery, batch.with_inputs(rest))

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

    async def _hand_back(self, delivery: Delivery, rest: CallBatch) -> None:
        # Requeued (and confirmed) before the original message is acknowledged: a crash
        # in between runs those inputs twice, never zero times.
        try:
            await self._outbox.requeue(delivery.message, [rest], expires_at=delivery.expires_at)
        except (EngineError, *BROKER_ERRORS) as exc:
            self._log.warning("inputs_not_handed_back", reason=str(exc), inputs=len(rest.inputs))
            delivery.abandoned = True  # the whole message runs again elsewhere
        await self._outbox.settle(delivery)

    def _report(self, event: str, message: AbstractIncomingMessage) -> None:
        if message.message_id:
            try:
                self._link.send({"event": event, "message": message.message_id})
            except OSError:
                self.request_stop()  # the engine is gone

    def _report_released(self, message: AbstractIncomingMessage) -> None:
        self._report("released", message)

    # -- outcomes ------------------------------------------------------------------------

    def _on_done(self, job: Job, status: int, fmt: int, data: bytes, seconds: float) -> None:
        self._held -= 1
        if not self._held:
            self._idle.set()
        self.last_active = time.monotonic()
        delivery: Delivery = job.delivery
        if status == STATUS_ABANDONED:
            delivery.abandoned = True
            self._outbox.add(None, delivery)
        elif status == STATUS_CANCELLED or job.invocation_id in self._cancels:
            self._outbox.add(None, delivery)
        elif (
            status == STATUS_ERROR
            and not job.no_retry
            and delivery.batch.failures < self.config.spec.max_retries
        ):
            self._outbox.add(None, delivery, (delivery, job.index, job.fmt, job.data))
        else:
            self._outbox.add((job.invocation_id, job.index, status, fmt, data, seconds), delivery)
