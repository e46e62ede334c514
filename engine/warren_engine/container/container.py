"""A container: one OS process that holds and runs one function's inputs from its queue.

:mod:`warren_engine.container.main` runs it in a process of its own. It consumes the
function queue through Warren's own AMQP driver (:mod:`warren.wire.amqp`, kept connected by
:mod:`warren.wire.session`), with a prefetch tuned to the batch sizes it receives
(:class:`~warren.wire.batching.PrefetchTuner`), and verifies each message's signature
before anything else (:mod:`warren_engine.container.rejections` dead-letters what fails, and counts
crashes of redelivered messages). It *holds*
every input of a message it takes and *runs* at most ``max_inputs`` at once
(:mod:`warren_engine.container.executor`); held inputs start in turn as slots free up. A container
that holds much more work than it can start soon (a map whose later inputs turned
out slower than its first) hands the inputs it has not started back to the queue,
through its engine, so that other containers run them.

Results leave through :mod:`warren_engine.container.replies`; a message is acknowledged
only after the
results of all its inputs are confirmed by the broker, so a container that dies
mid-call gets its inputs redelivered to another. Before running a message it records
it in its holding table (:mod:`warren_engine.pipe.holdings`), which the engine reads if the
process dies.

SIGTERM stops taking inputs, hands back the held inputs that have not started, lets
running ones finish (bounded by a grace period), publishes their results, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog
from warren.client.batch_sizer import TARGET_BATCH_SECONDS
from warren.client.publisher import BROKER_ERRORS, published_at
from warren.config import Settings
from warren.exceptions import EngineError, WarrenError
from warren.wire import naming
from warren.wire.amqp import NODE_HEARTBEAT_SECONDS, Channel, Connection, Delivery
from warren.wire.batching import PrefetchTuner
from warren.wire.protocol import KIND_CALLS, STATUS_CANCELLED, STATUS_ERROR, STATUS_OK, CallBatch
from warren.wire.session import BrokerSession
from warren.wire.signing import ENVELOPE_OVERHEAD, MessageExpiredError, signer
from warren.wire.spec import FunctionSpec

from warren_engine.container.cancels import Cancels
from warren_engine.container.executor import STATUS_ABANDONED, Executor, Job
from warren_engine.container.failure_reports import FailureReports
from warren_engine.container.inbound import Inbound
from warren_engine.container.log_shipper import LogShipper
from warren_engine.container.rejections import Rejections
from warren_engine.container.replies import HeldMessage, Replies
from warren_engine.pipe.gauge import LoadGauge
from warren_engine.pipe.holdings import HoldingTable
from warren_engine.pipe.messages import CRASHED, REPLACED, Dropped, Status
from warren_engine.pipe.pipes import EngineLink
from warren_engine.pipe.tally import Tally

log = structlog.get_logger(__name__)

EXIT_BAD_CODE = 3
EXIT_REPLACED = 4
REPLACEMENT_FLUSH_SECONDS = 5.0
SUSPECT_RETRY_DELAY = 1.0
# A container keeps at most this much expected work (in seconds of its slots' time)
# waiting beyond what runs; what is beyond goes back to the queue for other containers.
HOLD_SECONDS = 0.25
HOLD_CHECK_SECONDS = 0.05
# Run times and waits observed are sorted into their buckets as each report is sent, or
# when a message arrives with more than this many of either waiting (no report sent).
FOLD_OVER = 50_000


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """What every container of one function (or variant) shares: its pool's configuration."""

    broker_url: str = field(repr=False)  # the containers' user, with its password
    environment: str
    instance: str
    queue: str
    spec: FunctionSpec
    code_path: str
    settings: Settings = field(repr=False)  # its engine's, for containers (holds the key)
    sys_path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """What one container is started with: its function's configuration, and its own."""

    function: FunctionConfig
    container_id: str
    cancelled: tuple[str, ...] = ()
    environ: dict[str, str | None] = field(default_factory=dict, repr=False)
    volumes: dict[str, tuple[str, str]] = field(default_factory=dict)
    core: int | None = None  # the core its threads run on (see warren_engine.pool.cores)


class Container:
    def __init__(
        self,
        config: ContainerConfig,
        fn: Callable[..., Any],
        link: EngineLink,
        holdings: HoldingTable,
        on_ready: Callable[[], None] = lambda: None,
        output: LogShipper | None = None,
        gauge: LoadGauge | None = None,
    ) -> None:
        self.config = config
        self._output = output
        self._gauge = gauge  # where the executor keeps its counts for the engine
        self._fn = fn
        self._link = link
        self._holdings = holdings
        self._on_ready = on_ready
        self._stop = asyncio.Event()
        self._signer = signer(config.function.settings)
        self._log = log.bind(container=config.container_id, function=config.function.spec.tag)
        self._replies = Replies(
            config.function.spec, self._signer, link, self._released, self._acks_may_wait
        )
        self._rejections = Rejections(
            environment=config.function.environment,
            function=config.function.spec.tag,
            crash_limit=config.function.settings.crash_limit,
            signer=self._signer,
            link=link,
            replies=self._replies,
            log=self._log,
        )
        self._executor: Executor | None = None
        self._count_held: Callable[[], int] = lambda: 0  # the executor's, once it runs
        self._failures = FailureReports(link.send)
        self._cancels = Cancels(config.cancelled, self._signer, self._log)
        self._exiting: asyncio.Task[None] | None = None
        self._session: BrokerSession | None = None
        self._inputs: Channel | None = None
        self._consumer_tag: str | None = None
        self._paused = False
        self._resubscribing = asyncio.Lock()
        self._deliveries: set[HeldMessage] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._holding = asyncio.Event()  # set while inputs wait for a slot
        self._gate = asyncio.Event()  # cleared while a suspect input runs alone
        self._gate.set()
        self._isolation = asyncio.Lock()
        self.last_active = time.monotonic()
        self.messages_received = 0
        self.inputs_received = 0
        self.tally = Tally()  # how its inputs ended, reported to the engine (see main)
        self._observe_run = self.tally.run_seconds.observe  # per input: no lookups
        self._observe_wait = self.tally.queue_wait.observe
        self._tuner = PrefetchTuner(config.function.spec.max_inputs)

    @property
    def held(self) -> int:
        """Inputs held: running, or waiting for a slot."""
        return self._executor.held if self._executor is not None else 0

    @property
    def mean_batch(self) -> float:
        """Mean inputs per message received: how the engine turns queue depth into inputs."""
        return self._tuner.mean_size

    def request_stop(self) -> None:
        self._stop.set()

    def status(self) -> Status:
        """What the container reports to its engine (see :mod:`warren_engine.container.main`)."""
        idle_for = 0.0 if self.held else time.monotonic() - self.last_active
        return Status(
            running=self.held,
            idle_for=idle_for,
            batch=self.mean_batch,
            messages=self.messages_received,
            inputs=self.inputs_received,
            tally=self.tally.copy(),
        )

    @property
    def executor(self) -> Executor:
        assert self._executor is not None, "the container is not running"
        return self._executor

    async def run(self) -> None:
        self._executor = Executor(
            self._fn,
            self.config.function.spec,
            self._on_done,
            on_stuck=self._replace_soon,
            max_result_size=self._signer.max_size - ENVELOPE_OVERHEAD,
            skip=self._cancels.skips,
            after_outcomes=self._replies.flush_soon,  # a wake-up's outcomes are all in
            gauge=self._gauge,
        )
        self._count_held = self._executor.count_held
        self._cancels.attach(self._executor, self._exit_for_replacement)
        session = self._session = BrokerSession(
            self.config.function.broker_url,
            f"container-{self.config.container_id}",
            self._setup,
            heartbeat=NODE_HEARTBEAT_SECONDS,  # what it holds goes back soon if it is cut off
        )
        await session.start()
        # Deliveries die with their connection (the broker requeues them): the engine's
        # crash ledger must not wait for this container to exit when they are redelivered.
        session.lost_callbacks.append(self._on_connection_lost)
        self._own(self._watch_holdings())
        if self._output is not None:
            self._own(self._output.run())
        self._log.info("container_started", pid=os.getpid(), queue=self.config.function.queue)
        self._on_ready()
        try:
            await self._stop.wait()
        finally:
            await self._stop_consuming()  # no new delivery may come after this
            await self._finish()

    async def _setup(self, connection: Connection, first: bool) -> None:
        """After each (re)connection: the result channel, the cancel subscription (its
        own channel: the input channel's prefetch must never hold back a cancel), and
        the consumer of the function queue."""
        self._replies.open(await connection.channel(confirm=True), naming.replies_exchange())
        if self._output is not None:  # a channel of its own: output never slows results
            exchange = naming.log_stream(self.config.function.environment)
            self._output.open(await connection.channel(), exchange)
        cancels = await connection.channel()
        listener = naming.cancel_listener_queue(
            self.config.function.environment, self.config.container_id
        )
        await cancels.declare_queue(listener, exclusive=True, auto_delete=True)
        await cancels.bind_queue(listener, naming.cancel_exchange(self.config.function.environment))
        await cancels.consume(listener, self._cancels.on_cancel, no_ack=True)
        inputs = await connection.channel()
        await inputs.declare_queue(self.config.function.queue, passive=True)
        inputs.closed.add_done_callback(self._on_inputs_closed)
        self._inputs, self._consumer_tag = inputs, None
        if not first:
            self._forget_deliveries()
        if not self._paused:
            await self._consume()

    async def _finish(self) -> None:
        executor = self.executor
        await self._give_back(executor.take_back(0))
        if not await executor.wait_idle(self.config.function.settings.stop_grace):
            self._log.warning("container_stop_grace_exceeded", running=executor.running)
        await executor.close()
        await self._replies.drain()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._output is not None:
            self._output.flush()  # the last lines, before the connection goes
        if self._session is not None:
            await self._session.close()
        self._log.info("container_stopped")

    def _own(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._log.error(
                "container_task_failed",
                reason=f"{type(error).__name__}: {error}",
                exc_info=error,
            )

    # -- the consumer --------------------------------------------------------------------

    async def _consume(self) -> None:
        """Consume the function queue on the input channel, with the tuned prefetch."""
        async with self._resubscribing:
            inputs = self._inputs
            if inputs is None or self._consumer_tag is not None or self._stop.is_set():
                return
            await inputs.qos(self._tuner.prefetch)
            self._consumer_tag = await inputs.consume(self.config.function.queue, self._on_delivery)

    async def _stop_consuming(self) -> None:
        async with self._resubscribing:
            tag, self._consumer_tag = self._consumer_tag, None
            if tag is not None and self._inputs is not None:
                with contextlib.suppress(*BROKER_ERRORS):
                    await self._inputs.cancel(tag)

    async def _pause_intake(self) -> None:
        self._paused = True
        await self._stop_consuming()

    async def _resume_intake(self) -> None:
        self._paused = False
        await self._consume()

    async def _resubscribe(self, prefetch: int) -> None:
        # Per-consumer prefetch (a channel-wide one costs RabbitMQ a third of a
        # millisecond per message) applies to consumers made after it is set: so a new
        # consumer takes over, then the old one is cancelled. Its unacknowledged
        # messages stay with the channel and are settled as usual.
        async with self._resubscribing:
            inputs, previous = self._inputs, self._consumer_tag
            if inputs is None or previous is None or self._stop.is_set():
                return
            with contextlib.suppress(*BROKER_ERRORS):
                await inputs.qos(prefetch)
                self._consumer_tag = await inputs.consume(
                    self.config.function.queue, self._on_delivery
                )
                await inputs.cancel(previous)

    def _forget_deliveries(self) -> None:
        """The channel that delivered what we hold is gone: nothing is held in the broker's
        eyes (its messages were requeued), so the holding table says so too, and held
        inputs that have not started are dropped (they run again from the queue)."""
        if self._executor is not None:
            self._executor.take_back(0)
        for delivery in list(self._deliveries):
            delivery.message.processed = True  # an ack on the dead channel means nothing
            self._released(delivery)
        if not self.held:
            self._idle.set()

    def _on_connection_lost(self, *_: Any) -> None:
        if not self._stop.is_set():
            self._log.warning("broker_connection_lost")
            self._forget_deliveries()
            with contextlib.suppress(OSError):
                self._link.send(Dropped())

    def _on_inputs_closed(self, closed: asyncio.Future[None]) -> None:
        exc = closed.exception()
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
        await self._replies.drain(REPLACEMENT_FLUSH_SECONDS)
        with contextlib.suppress(OSError):
            self._link.send(self.status())  # the last outcomes (the timeout's among them)
        os._exit(EXIT_REPLACED)

    # -- intake --------------------------------------------------------------------------

    def _on_delivery(self, delivery: Delivery) -> None:
        """A message from the function queue: held at once, unless it needs a second look
        (a redelivery the crash ledger must judge, a suspect of a crash, a container
        running a suspect alone), which is taken in a task of its own."""
        message = Inbound(delivery)
        if self._stop.is_set():
            message.nack(requeue=True)
            return
        try:
            envelope = self._signer.open_message(message, kind=KIND_CALLS)
            batch = CallBatch.from_body(envelope.body)
        except MessageExpiredError as exc:
            self._own(self._rejections.expired(message, exc))
            return
        except WarrenError as exc:
            self._own(self._rejections.reject(message, str(exc)))
            return
        if batch.invocation_id in self._cancels or not batch.inputs:
            message.ack()
            return
        if message.redelivered or batch.crashes or not self._gate.is_set():
            self._own(self._take_carefully(message, batch, envelope.expires_at))
            return
        self._take(message, batch, envelope.expires_at)

    async def _take_carefully(self, message: Inbound, batch: CallBatch, expires_at: int) -> None:
        if message.redelivered:
            verdict = await self._rejections.verdict(message)
            if verdict == REPLACED:
                message.ack()
                return
            if verdict == CRASHED:
                await self._rejections.after_crash(message, batch, expires_at)
                return
        if batch.crashes:
            await self._take_alone(message, batch, expires_at)
            return
        if not self._gate.is_set():
            # A suspect runs alone here for now: this one goes to another container.
            message.nack(requeue=True)
            return
        self._take(message, batch, expires_at)

    async def _take_alone(self, message: Inbound, batch: CallBatch, expires_at: int) -> None:
        """Run an input that was running when a container died with nothing beside it.

        Then if it kills this container too, no other input is charged with the crash.
        A container that is busy does not hold it (its delivery would wait unacknowledged
        for the running inputs): it goes back to the queue after a second.
        """
        if self._isolation.locked() or self.held or self._replies.busy:
            try:
                await self._replies.requeue(
                    message, [batch], SUSPECT_RETRY_DELAY, expires_at=expires_at
                )
            except (EngineError, *BROKER_ERRORS):
                message.nack(requeue=True)
                return
            message.ack()
            return
        async with self._isolation:
            self._gate.clear()
            await self._pause_intake()
            try:
                self._take(message, batch, expires_at)
                await self._quiet()
            finally:
                self._gate.set()
                await self._resume_intake()

    async def _quiet(self) -> None:
        """Until nothing runs and every message taken is settled (the table holds none)."""
        await self._idle.wait()
        await self._replies.drain()

    def _take(self, message: Inbound, batch: CallBatch, expires_at: int) -> None:
        """Hold every input of the message; each runs when a slot is free."""
        slot = None
        if message.message_id:
            slot = self._holdings.hold(message.message_id)
            if slot is None:  # never in practice: the table has room for several prefetches
                self._log.warning("holding_table_full", slots=self._holdings.slots)
                message.nack(requeue=True)
                return
        published = 0.0 if message.redelivered else self._published(message)
        delivery = HeldMessage(message, batch, len(batch.inputs), expires_at, slot, published)
        self._deliveries.add(delivery)
        self._idle.clear()
        self.messages_received += 1
        self.inputs_received += len(batch.inputs)
        if published:
            self.tally.received += len(batch.inputs)  # a caller's message, the first time
        self.tally.fold(over=FOLD_OVER)  # what it keeps between two reports stays bounded
        if self._gauge is not None:  # before any of them runs, so before any result
            self._gauge.count_received(self.messages_received, self.inputs_received)
        invocation_id, json = batch.invocation_id, batch.json_results
        self.executor.hold(
            [
                Job(invocation_id, index, fmt, data, delivery, json=json)
                for index, fmt, data in batch.inputs
            ]
        )
        if self.executor.queued:
            self._holding.set()
        new_prefetch = self._tuner.observe(len(batch.inputs), self._per_input() or None)
        if new_prefetch is not None:
            self._own(self._resubscribe(new_prefetch))

    @staticmethod
    def _published(message: Inbound) -> float:
        """When the message's caller published it, on the monotonic clock (0: unknown).

        Only a caller's own message says so: the copies the engine publishes of inputs
        put back (handed back, retried, split after a crash) do not, so their inputs are
        not received again, and their wait is not counted as a caller's."""
        wall = published_at(message.message_id)
        if wall is None:
            return 0.0
        return time.monotonic() - max(0.0, time.time() - wall)  # another host's clock may lead

    def _acks_may_wait(self) -> bool:
        """Whether an acknowledgement may wait for the next write: only while the broker
        has room to deliver the next message without it."""
        return len(self._deliveries) + 1 < self._tuner.prefetch

    def _released(self, delivery: HeldMessage) -> None:
        if delivery.slot is not None:
            self._holdings.release(delivery.slot)
            delivery.slot = None
        self._deliveries.discard(delivery)

    # -- holding no more than it should --------------------------------------------------

    async def _watch_holdings(self) -> None:
        """While inputs wait for a slot, check every few hundredths of a second that the
        container is not holding more work than it will start soon."""
        while True:
            await self._holding.wait()
            await asyncio.sleep(HOLD_CHECK_SECONDS)
            if not self.executor.queued:
                self._holding.clear()
                continue
            excess = self._excess()
            if excess:
                jobs = self.executor.take_back(self.executor.queued - excess)
                await self._give_back(jobs)

    def _per_input(self) -> float:
        """Seconds an input takes here: the running mean, or more if one input has been
        running longer than the whole hold budget (a fast input waiting for the GIL for a
        few milliseconds says nothing; one running for a tenth of a second does)."""
        executor = self.executor
        per_input = executor.per_input or 0.0
        running = executor.longest_running(time.monotonic())
        return max(per_input, running) if running > HOLD_SECONDS else per_input

    def _excess(self) -> int:
        """How many of the inputs waiting for a slot this container should not keep."""
        per_input = self._per_input()
        if per_input <= 0:
            return 0
        keep = int(HOLD_SECONDS * self.config.function.spec.max_inputs / per_input)
        return max(0, self.executor.queued - keep)

    async def _give_back(self, jobs: list[Job]) -> None:
        """Send held inputs that have not started back to the queue, for any container.

        A message none of whose inputs started goes back whole; the rest of one that
        started is published anew, through the engine, in messages sized by the run
        time seen here, before the original is acknowledged (a crash in between runs
        them twice, never zero times).
        """
        if not jobs:
            return
        by_delivery: dict[HeldMessage, list[Job]] = {}
        for job in jobs:
            by_delivery.setdefault(job.delivery, []).append(job)
        per_input = self._per_input()
        size = 1 if not per_input else max(1, int(TARGET_BATCH_SECONDS / per_input))
        for delivery, taken in by_delivery.items():
            if len(taken) == len(delivery.batch.inputs) == delivery.pending:
                self._released(delivery)
                delivery.message.nack(requeue=True)
                continue
            items = [(job.index, job.fmt, job.data) for job in taken]
            batches = [
                delivery.batch.with_inputs(items[start : start + size])
                for start in range(0, len(items), size)
            ]
            try:
                await self._replies.requeue(
                    delivery.message, batches, expires_at=delivery.expires_at
                )
            except (EngineError, *BROKER_ERRORS) as exc:
                self._log.warning("inputs_not_handed_back", reason=str(exc), inputs=len(items))
                delivery.abandoned = True  # the whole message runs again elsewhere
            await self._replies.settle(delivery, len(taken))
        self._log.info("inputs_handed_back", inputs=len(jobs), messages=len(by_delivery))
        self._tuner.reset()
        await self._resubscribe(self._tuner.prefetch)
        if not self.held:
            self._idle.set()

    # -- outcomes ------------------------------------------------------------------------

    def _on_done(self, job: Job, status: int, fmt: int, data: bytes, seconds: float) -> None:
        if not self._count_held():  # self.held, in one call: this runs for every input
            self._idle.set()
        self.last_active = time.monotonic()
        delivery: HeldMessage = job.delivery
        if status == STATUS_ERROR and not self._cancels.skips(job):
            attempt = delivery.batch.failures + 1
            self._failures.report(job.invocation_id, job.index, attempt, self._retries(job), data)
        if status == STATUS_ABANDONED:
            delivery.abandoned = True
            self._replies.add(None, delivery)
        elif status == STATUS_CANCELLED or self._cancels.skips(job):
            self._replies.add(None, delivery)
        elif status == STATUS_ERROR and self._retries(job):
            self.tally.retried += 1
            self._timed(job, delivery, seconds)
            self._replies.add(None, delivery, (delivery, job.index, job.fmt, job.data))
        else:
            tally = self.tally
            if status == STATUS_OK:
                tally.succeeded += 1
            else:
                tally.failed += 1
            started = job.started
            if job.timed_out:
                self._timed(job, delivery, seconds)
            elif started:  # what _timed does, inline: this is the path of every input
                self._observe_run(seconds)
                if delivery.published:  # a negative wait (clocks) counts as 0
                    self._observe_wait(started - delivery.published)
            self._replies.add((job.invocation_id, job.index, status, fmt, data, seconds), delivery)

    def _timed(self, job: Job, delivery: HeldMessage, seconds: float) -> None:
        """Count how long an attempt that ran to its outcome ran, and waited to start."""
        tally = self.tally
        if job.timed_out:
            tally.timed_out += 1
            seconds = self.last_active - job.started  # reported as it passed its deadline
        if job.started:
            tally.run_seconds.observe(seconds)
            if delivery.published:  # a negative wait (clocks) counts as 0
                tally.queue_wait.observe(job.started - delivery.published)

    def _retries(self, job: Job) -> bool:
        """Whether a failed attempt of ``job`` is run again (its retries are not spent)."""
        failures: int = job.delivery.batch.failures
        return not job.no_retry and failures < self.config.function.spec.max_retries
