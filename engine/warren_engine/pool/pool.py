"""An autoscaled pool of container processes for one function.

Every tick the pool reads its queue's depth and its containers' reports, asks
:func:`warren_engine.pool.autoscaler.decide` what to do, and does it: forks new containers (see
:mod:`warren_engine.pool.processes`), or sends SIGTERM to those to stop, which finish their current
inputs first. Containers that die young are restarted with a growing back-off, so a
crash loop does not spin. If containers cannot even load the app's code, the inputs
queued meanwhile are answered with that error rather than left waiting.

Its stats and its list of containers are read when asked, not from the last tick or
the last status report: the queue's depth from the broker, and each container's inputs
held and running from its load gauge (:mod:`warren_engine.pipe.gauge`), so that they
are true at the moment of the question (none running once a map has its results).
One container can be stopped on its own (``warren container stop``); it finishes what
it runs, and the next tick replaces it if the load still asks for it.

The pool also serves its containers' requests (:mod:`warren_engine.pipe.pipes`): it publishes
what they hand back or retry (:mod:`warren_engine.publisher`), and keeps the crash ledger
(:mod:`warren_engine.pool.crash_ledger`) that tells a container whether a redelivered message was
running in a container that died.

What its containers tally of their inputs, the containers it starts and the dead
letters it publishes go to the function's metrics (:mod:`warren_engine.pool.metrics`),
which read the pool's gauges (:meth:`ContainerPool.gauges`) when they are scraped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from warren import exceptions
from warren.wire.control import ContainerInfo, PoolStats

from warren_engine.container.container import EXIT_REPLACED, ContainerConfig, FunctionConfig
from warren_engine.pipe.messages import (
    Answered,
    AskVerdict,
    DeadLetter,
    Done,
    Dropped,
    Event,
    Failed,
    Query,
    Raised,
    Ready,
    Refused,
    Reply,
    Request,
    Requeue,
    Response,
    Status,
    Verdict,
)
from warren_engine.pipe.tally import Tally
from warren_engine.pool.autoscaler import Autoscaling, ContainerView, decide
from warren_engine.pool.cancel_memory import CancelMemory
from warren_engine.pool.cores import CorePlacement, pinnable
from warren_engine.pool.crash_ledger import CrashLedger
from warren_engine.pool.failure_log import FailureLog
from warren_engine.pool.metrics import CRASH_LIMIT, REJECTED, FunctionMetrics, PoolGauges
from warren_engine.pool.node_capacity import Node
from warren_engine.pool.presence import PoolBeat
from warren_engine.pool.processes import ContainerProcess
from warren_engine.pool.shares import Share
from warren_engine.pool.slots import Slots, Token
from warren_engine.publisher import BROKER_ERRORS, CarriedProperties, Republisher

log = structlog.get_logger(__name__)

TICK = 0.1
START_TIMEOUT = 120.0
KILL_WAIT = 5.0
MIN_HEALTHY_SECONDS = 5.0
MAX_BACKOFF = 30.0
# A tick that waits longer than this for the broker gives up: the connection it started
# on went silent (this node was cut off from the broker) and its calls may never end.
TICK_TIMEOUT = 10.0
SLOT_RETRY = 0.5  # seconds between asks for a slot while all are taken


@dataclass(slots=True, eq=False)
class _Member:
    key: int
    container_id: str
    process: ContainerProcess
    started_at: float
    ready: bool = False
    stopping: bool = False
    running: int = 0
    idle_for: float = 0.0
    reported_at: float = field(default_factory=time.monotonic)
    batch: float = 1.0
    messages: int = 0
    inputs: int = 0
    tally: Tally = field(default_factory=Tally)  # its last report's
    kill_by: asyncio.TimerHandle | None = None  # set when it was asked to stop on its own
    token: Token | None = None  # its slot, when the pool's max_containers is cluster-wide

    def view(self, now: float) -> ContainerView:
        idle = 0.0 if self.running else self.idle_for + (now - self.reported_at)
        return ContainerView(self.key, self.running, idle, self.stopping)

    def info(self, app: str, function: str, node: str) -> ContainerInfo:
        held, running = self.process.gauge.read()
        state = "stopping" if self.stopping else "ready" if self.ready else "starting"
        uptime = time.monotonic() - self.started_at
        return ContainerInfo(
            self.container_id, app, function, node, self.process.pid, running, held, uptime, state
        )


QueueDepth = Callable[[str], Awaitable[int]]
AnswerQueued = Callable[[str, str], Awaitable[int]]
# Keyed by the message's class, so each handler gets the kind it is written for.
EventHandler = Callable[[int, Any], None]
QueryHandler = Callable[[_Member, Any], Awaitable[Response]]


class ContainerPool:
    """Sizes one function's containers to its load, within its autoscaler settings."""

    def __init__(
        self,
        config: FunctionConfig,
        autoscaling: Autoscaling,
        cancels: CancelMemory,
        queue_depth: QueueDepth,
        answer_queued: AnswerQueued,
        republisher: Republisher,
        environ: Callable[[], dict[str, str | None]] = dict,
        volumes: dict[str, tuple[str, str]] | None = None,
        node: Node | None = None,
        cores: CorePlacement | None = None,
        metrics: FunctionMetrics | None = None,
        share: Callable[[], Share] = Share,
        slots: Slots | None = None,
        max_is_per_node: bool = True,
    ) -> None:
        self.config = config
        # This node's place among those that run the pool, and the pool's slots: see
        # warren_engine.pool.shares and warren_engine.pool.slots.
        self._share = share
        self._slots = slots
        self._max_is_per_node = max_is_per_node
        self._no_slot_until = 0.0
        # The function's series on this node (of its own if the pool is not given them).
        self._metrics = metrics or FunctionMetrics(
            (config.environment, config.instance, config.spec.tag)
        )
        self._cores = cores if cores is not None and pinnable(config.spec) else None
        self._republisher = republisher
        self._environ = environ
        self._volumes = volumes or {}
        self._node = node or Node()
        self._waiting_for_capacity = False
        self._ledger = CrashLedger()
        self.failures = FailureLog()  # the last inputs that raised, for the dashboard
        self.autoscaling = autoscaling
        self._cancels = cancels
        self._queue_depth = queue_depth
        self._answer_queued = answer_queued
        self._members: dict[int, _Member] = {}
        self._retired_messages = 0  # received by containers that have exited
        self._retired_inputs = 0
        self._keys = 0
        self._queued = 0
        self._queue_messages = 0
        self._stopping = False
        self._poke = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._requests: set[asyncio.Task[None]] = set()  # containers' requests in progress
        self._ready: asyncio.Future[None] | None = None
        self._load_error: exceptions.WarrenError | None = None
        self._backoff = 0.0
        self._next_launch = 0.0
        self._log = log.bind(function=config.spec.tag, app=config.instance)
        self._on_event: dict[type[Event], EventHandler] = {
            Dropped: self._on_dropped,
            Request: self._on_request,
            Ready: self._on_ready,
            Status: self._on_report,
            Failed: self._on_failed,
            Raised: self._on_raised,
        }
        self._serve: dict[type[Query], QueryHandler] = {
            AskVerdict: self._verdict,
            Requeue: self._requeue,
            DeadLetter: self._dead_letter,
        }

    # -- life cycle --------------------------------------------------------------------

    async def start(self, warm: int) -> None:
        """Start ``warm`` containers (waiting until one is ready, if any), then autoscale."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._metrics.attach(self)
        launched = 0
        for _ in range(warm):
            launched += await self._launch_with_slot()
        if launched:
            try:
                await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
            except TimeoutError:
                await self.stop(grace=1.0)
                raise exceptions.EngineError(
                    f"no container of {self.config.spec.tag!r} was ready within "
                    f"{START_TIMEOUT:g}s (is the node out of capacity? see the engine's log)"
                ) from None
            except BaseException:
                await self.stop(grace=1.0)
                raise
        self._own(self._scale_forever())

    def update(self, autoscaling: Autoscaling) -> None:
        """Apply new autoscaler settings at once."""
        self.autoscaling = autoscaling
        self._poke.set()

    def bound(self, slots: Slots | None, *, max_is_per_node: bool) -> None:
        """Bound the pool by cluster-wide slots from now on (None: by its own settings)."""
        if (slots is None) != (self._slots is None):
            self._slots = slots
        self._max_is_per_node = max_is_per_node
        self._poke.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop every container: each finishes (or requeues) its inputs within the grace."""
        grace = self.config.settings.stop_grace + KILL_WAIT if grace is None else grace
        self._stopping = True
        self._metrics.detach(self)
        # The autoscaler first: a tick still running would start containers to replace
        # the ones being stopped, and nobody would stop those.
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        members = list(self._members.values())
        await self._terminate(members, grace)
        for member in members:  # their _watch tasks were cancelled above
            await self._retire(member)
        if self._requests:
            await asyncio.wait(set(self._requests), timeout=KILL_WAIT)

    async def _terminate(self, members: list[_Member], grace: float) -> None:
        """SIGTERM, then SIGKILL what is still running after ``grace`` seconds."""
        for member in members:
            member.stopping = True
            member.process.terminate()
        if not members:
            return
        waits = [asyncio.ensure_future(m.process.wait()) for m in members]
        _, late = await asyncio.wait(waits, timeout=grace)
        for member in members:
            if member.process.alive:
                self._log.warning("container_killed", pid=member.process.pid)
                member.process.kill()
        if late:
            _, lost = await asyncio.wait(late, timeout=KILL_WAIT)
            for waiting in lost:
                waiting.cancel()
            if lost:
                self._log.error("containers_not_reaped", count=len(lost))

    async def stats(self) -> PoolStats:
        """The pool now: the queue's depth asked afresh (the last tick's if the broker is
        away), the containers' inputs from their gauges."""
        try:
            queued = self._inputs_in(await self._queue_depth(self.config.queue))
        except BROKER_ERRORS:
            queued = self._queued
        members = [m for m in self._members.values() if m.process.alive]
        loads = [m.process.gauge.read() for m in members]
        # Every member until its exit is handled, which is when it joins the retired.
        received = [m.process.gauge.received() for m in self._members.values()]
        return PoolStats(
            queued_inputs=queued,
            running_inputs=sum(running for _, running in loads),
            held_inputs=sum(held for held, _ in loads),
            containers=len(members),
            pids=tuple(sorted(m.process.pid for m in members)),
            autoscaler=self.autoscaling.to_settings(),
            messages_received=self._retired_messages + sum(r[0] for r in received),
            inputs_received=self._retired_inputs + sum(r[1] for r in received),
        )

    def beat(self) -> PoolBeat:
        """What this pool runs on this node, for the node's heartbeat."""
        members = [m for m in self._members.values() if m.process.alive]
        loads = [m.process.gauge.read() for m in members]
        return PoolBeat(
            self.config.queue,
            len(members),
            sum(running for _, running in loads),
            sum(held for held, _ in loads),
            tuple(sorted(m.process.pid for m in members)),
        )

    def gauges(self) -> PoolGauges:
        """What this pool runs now, for the function's metrics."""
        live = [m for m in self._members.values() if m.process.alive]
        ready = sum(1 for m in live if m.ready)
        return PoolGauges(
            containers_running=ready,
            containers_starting=len(live) - ready,
            inputs_running=sum(m.process.gauge.read()[1] for m in live),
            queue_messages=self._queue_messages,
            queue_inputs=self._queued,
        )

    def containers(self, app: str, function: str, node: str) -> list[ContainerInfo]:
        """Its live containers, oldest first (``app``, ``function`` and ``node`` name it)."""
        members = sorted(
            (m for m in self._members.values() if m.process.alive), key=lambda m: m.started_at
        )
        return [member.info(app, function, node) for member in members]

    def stop_container(
        self, container_id: str, app: str, function: str, node: str
    ) -> ContainerInfo | None:
        """Stop one container gracefully, as a scale-down does (None: not one of this
        pool's). It finishes its running inputs within the stop grace, or is killed (what
        it held is then redelivered); the next tick starts a replacement if one is needed."""
        member = next((m for m in self._members.values() if m.container_id == container_id), None)
        if member is None or not member.process.alive:
            return None
        info = member.info(app, function, node)
        if not member.stopping:
            member.stopping = True
            member.process.terminate()
            grace = self.config.settings.stop_grace + KILL_WAIT
            member.kill_by = asyncio.get_running_loop().call_later(grace, member.process.kill)
            self._log.info("container_stop_asked", pid=member.process.pid, container=container_id)
            self._poke.set()
        return dataclasses.replace(info, state="stopping")

    # -- scaling -----------------------------------------------------------------------

    async def _scale_forever(self) -> None:
        broker_away = False
        while not self._stopping:
            try:
                async with asyncio.timeout(TICK_TIMEOUT):
                    await self._tick()
                broker_away = False
            except (*BROKER_ERRORS, TimeoutError) as exc:  # the connection is coming back
                if not broker_away:
                    self._log.warning("autoscaler_waiting_for_broker", reason=str(exc))
                broker_away = True
            except asyncio.CancelledError:  # aiormq cancels the calls of a stuck connection
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                broker_away = True
            except Exception:
                self._log.exception("autoscaler_tick_failed")
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), TICK)

    async def _tick(self) -> None:
        messages = self._queue_messages = await self._queue_depth(self.config.queue)
        live = [m for m in self._members.values() if m.process.alive]
        self._queued = self._inputs_in(messages)
        if self._load_error is not None and messages:
            answered = await self._answer_queued(self.config.queue, str(self._load_error))
            self._log.error("inputs_failed_fast", inputs=answered, reason=str(self._load_error))
        await self._keep_slots(live)
        now = time.monotonic()
        share = self._share()
        settings = share.settings(self.autoscaling, max_is_per_node=self._max_is_per_node)
        if settings is None:  # this node's share is no container: the others run them
            for member in live:
                if not member.stopping:
                    self._scale_down(member)
            return
        decision = decide(
            settings,
            self.config.spec.max_inputs,
            share.of(self._queued),
            [m.view(now) for m in live if m.ready],
            starting=sum(1 for m in live if not m.ready and not m.stopping),
        )
        for key in decision.stop:
            self._scale_down(self._members[key])
        if decision.start and now >= self._next_launch:
            for _ in range(decision.start):
                if not await self._launch_with_slot():
                    break

    def _scale_down(self, member: _Member) -> None:
        member.stopping = True
        member.process.terminate()
        self._log.info("container_scaled_down", pid=member.process.pid)

    async def _keep_slots(self, live: list[_Member]) -> None:
        """Take a slot again for each container whose slot went with a lost channel; stop
        those for which none is left (another node took it meanwhile)."""
        if self._slots is None:
            return
        for member in live:
            if member.stopping or (member.token is not None and member.token.held):
                continue
            member.token = await self._slots.take()
            if member.token is None:
                self._log.warning("container_lost_its_slot", pid=member.process.pid)
                self._scale_down(member)

    async def _launch_with_slot(self) -> bool:
        """Start a container if a slot is free (always, without slots): whether it did."""
        token = None
        if self._slots is not None:
            if time.monotonic() < self._no_slot_until:
                return False
            token = await self._slots.take()
            if token is None:  # all taken: ask the broker again in a while, not every tick
                self._no_slot_until = time.monotonic() + SLOT_RETRY
                return False
        if not self._launch(token) and token is not None:
            await self._slots.give_back(token)  # type: ignore[union-attr]
            return False
        return True

    def _inputs_in(self, messages: int) -> int:
        """The inputs ``messages`` queued messages hold, by the batches containers see."""
        live = [m for m in self._members.values() if m.process.alive]
        batch = max((m.batch for m in live), default=1.0)
        return math.ceil(messages * batch)

    # -- members -----------------------------------------------------------------------

    def _launch(self, token: Token | None = None) -> bool:
        if self._stopping:
            return False
        container_id = uuid.uuid4().hex[:12]
        cancelled = tuple(self._cancels.recent())
        environ = self._environ()  # may hold secrets: never logged
        if not self._node.reserve(self.config.spec):
            if not self._waiting_for_capacity:
                self._log.warning("container_waiting_for_capacity", node=self._node.labels())
            self._waiting_for_capacity = True
            return False  # the next tick tries again
        self._waiting_for_capacity = False
        self._keys += 1
        key = self._keys
        core = None
        if self._cores is not None and self._cores.enabled:
            core = self._cores.take(container_id, self.config.queue)
        config = ContainerConfig(
            self.config,
            container_id,
            cancelled=cancelled,
            environ=environ,
            volumes=self._volumes,
            core=core,
        )
        try:
            process = ContainerProcess(config, lambda event: self._on_status(key, event))
        except BaseException:
            self._node.release(self.config.spec)
            self._give_core(container_id)
            raise
        if self._cores is not None:
            self._cores.started(container_id, process.pid)
        self._ledger.joined(key, process.holdings)
        member = _Member(key, container_id, process, started_at=time.monotonic(), token=token)
        self._members[key] = member
        self._metrics.cold_starts += 1
        self._own(self._watch(member))
        self._log.info("container_spawned", pid=process.pid, container=container_id)
        return True

    def _on_status(self, key: int, event: Event) -> None:
        self._on_event[type(event)](key, event)

    def _on_dropped(self, key: int, _: Dropped) -> None:
        self._ledger.dropped(key)  # its connection was lost: what it held is redelivered

    def _on_request(self, key: int, request: Request) -> None:
        member = self._members.get(key)
        if member is None:
            return
        # Owned apart from the autoscaler's tasks: stopping the pool lets them finish,
        # so a container is always answered (and a republish is never half done).
        task = asyncio.get_running_loop().create_task(self._answer(member, request))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    def _on_ready(self, key: int, _: Ready) -> None:
        member = self._members.get(key)
        if member is None:
            return
        member.ready = True
        self._load_error = None
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _on_report(self, key: int, status: Status) -> None:
        member = self._members.get(key)
        if member is None:
            return
        member.running = status.running
        member.idle_for = status.idle_for
        member.batch = status.batch
        member.reported_at = time.monotonic()
        self._metrics.reported(status.tally, member.tally)
        member.tally = status.tally

    def _on_raised(self, key: int, raised: Raised) -> None:
        member = self._members.get(key)
        if member is not None:
            self.failures.add(member.container_id, raised)

    def _on_failed(self, key: int, failed: Failed) -> None:
        if key in self._members:
            self._failed(failed)

    def _failed(self, failed: Failed) -> None:
        kind = (
            exceptions.VersionMismatchError
            if failed.error_type == "VersionMismatchError"
            else exceptions.EngineError
        )
        error = kind(
            f"containers of {self.config.spec.tag!r} cannot start: "
            f"{failed.error_type}: {failed.message}"
        )
        self._load_error = error
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)

    async def _watch(self, member: _Member) -> None:
        ready_by = asyncio.get_running_loop().call_later(
            START_TIMEOUT, lambda: None if member.ready else member.process.kill()
        )
        code = await member.process.wait()
        ready_by.cancel()
        if member.kill_by is not None:
            member.kill_by.cancel()
        await self._retire(member)
        messages, inputs = member.process.gauge.received()
        self._retired_messages += messages
        self._retired_inputs += inputs
        deliberate = self._stopping or member.stopping or code == EXIT_REPLACED
        if not deliberate and self._ledger.holding(member.key):
            self._log.error(
                "container_crashed",
                pid=member.process.pid,
                code=code,
                messages=self._ledger.holding(member.key),
            )
        self._ledger.exited(member.key, crashed=not deliberate)
        if deliberate:
            return
        lived = time.monotonic() - member.started_at
        self._log.warning(
            "container_exited", pid=member.process.pid, code=code, seconds=round(lived, 2)
        )
        self._backoff = (
            0.0 if lived >= MIN_HEALTHY_SECONDS else min(max(0.5, self._backoff * 2), MAX_BACKOFF)
        )
        self._next_launch = time.monotonic() + self._backoff
        if self._ready is not None and not self._ready.done() and not member.ready:
            self._failed(Failed("exit", f"it exited with code {code} before it was ready"))
        self._poke.set()

    # -- requests from containers ------------------------------------------------------

    async def _answer(self, member: _Member, request: Request) -> None:
        reply: Reply
        try:
            response = await self._serve[type(request.query)](member, request.query)
        except Exception as exc:
            self._log.warning(
                "container_request_failed", op=type(request.query).__name__, reason=str(exc)
            )
            reply = Refused(request.id, f"{type(exc).__name__}: {exc}")
        else:
            reply = Answered(request.id, response)
        member.process.answer(reply)

    async def _verdict(self, member: _Member, query: AskVerdict) -> Verdict:
        # Whatever the other containers reported is in the ledger before it answers.
        for other in list(self._members.values()):
            other.process.read_status()
        return Verdict(await self._ledger.verdict(query.message_id, member.key))

    async def _requeue(self, member: _Member, query: Requeue) -> Done:
        await self._republisher.requeue(
            self.config.queue,
            list(query.bodies),
            correlation_id=query.correlation_id,
            reply_to=query.reply_to,
            delay_ms=query.delay_ms,
        )
        if query.replaces:  # now in the queue: the crashed original must not run
            self._ledger.replaced(query.replaces)
        return Done()

    async def _dead_letter(self, member: _Member, query: DeadLetter) -> Done:
        await self._republisher.dead_letter(
            query.body,
            reason=query.reason,
            source_queue=self.config.queue,
            carried=CarriedProperties(
                query.message_id, query.correlation_id, query.reply_to, query.type
            ),
        )
        # A dead letter that stands for a crashed message is one of its inputs, at the
        # crash limit; any other is a message that failed verification.
        self._metrics.dead_letter(CRASH_LIMIT if query.replaces else REJECTED)
        if query.replaces:  # now in the queue: the crashed original must not run
            self._ledger.replaced(query.replaces)
        return Done()

    async def _retire(self, member: _Member) -> None:
        """A member has exited: its capacity, core and slot are free again."""
        if self._members.pop(member.key, None) is None:
            return
        self._node.release(self.config.spec)
        self._give_core(member.container_id)
        token, member.token = member.token, None
        if token is not None and self._slots is not None:
            await self._slots.give_back(token)

    def _give_core(self, container_id: str) -> None:
        if self._cores is not None:
            self._cores.give(container_id)

    def _own(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
