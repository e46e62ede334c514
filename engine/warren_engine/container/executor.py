"""Running a function's inputs inside a container: held in turn, at most ``max_inputs`` at once.

The executor knows nothing of the broker. The container hands it every input of a
message at once (:meth:`Executor.hold`), however many that is: *holding is not
running*. At most ``max_inputs`` of them run at a time, async ones as tasks, sync ones
on worker threads; the others wait in a local queue in their order and start as slots
free up. Each outcome is reported once through a callback on the event loop, as
``(job, status, format, data, seconds)``. An input cancelled because its invocation
was cancelled reports ``STATUS_CANCELLED`` so that its message can still be settled;
one cut short because the container is stopping reports ``STATUS_ABANDONED``, and its
message goes back to the queue for another container.

Sync functions run on at most ``max_inputs`` threads that take jobs from the shared
queue one after another: a thread that finishes an input starts the next one itself,
so a batch of a thousand inputs costs no thread hand-off per input, and their outcomes
come back to the loop in bulk (one wake-up for however many finished since the last).
Async functions run the same way on at most ``max_inputs`` slot tasks: no task per
input.
A job's timeout counts from when it starts, not from when it was held.

Inputs not started yet can be taken back (:meth:`Executor.take_back`): the container
hands them to other containers when it holds more work than it should.

The runner writes the count of inputs held and running to the container's load gauge
(:mod:`warren_engine.pipe.gauge`) before an outcome is reported: the engine reads the
gauge for its stats, so an input whose result has been published is never counted
there. It writes no more than that needs: inputs held, when a slot or thread starts
running or stops, and, as outcomes are reported, once per input of an async function
and once per wake-up of the loop for a sync one (a thread going on from one input to
the next writes nothing).
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from warren.exceptions import (
    ExecutionError,
    FunctionTimeoutError,
    MessageTooLargeError,
    OutOfMemoryError,
)
from warren.wire import failure
from warren.wire.codec import (
    FORMAT_JSON,
    FORMAT_MSGPACK,
    decode_call_args,
    encode_json,
    encode_value,
)
from warren.wire.protocol import STATUS_CANCELLED, STATUS_ERROR, STATUS_OK
from warren.wire.spec import FunctionSpec

from warren_engine.container.output import current_input, sync_input
from warren_engine.pipe.gauge import LoadGauge

# Weight of the newest run time in the executor's running mean.
SMOOTHING = 0.2
# While a sync function's inputs end faster than this and more of them wait to run, the
# loop collects their outcomes this often instead of being woken for each one: their
# results share a reply, and the threads run undisturbed. The last input held (a lone
# call's, the end of a batch) and slower inputs still wake the loop as they end.
COLLECT_SECONDS = 0.02


@dataclass(slots=True, eq=False)
class Job:
    """One input to run, and the message it came in (opaque here)."""

    invocation_id: str
    index: int
    fmt: int
    data: bytes
    delivery: Any
    json: bool = False  # the result as JSON (a web endpoint's caller), never a pickle
    no_retry: bool = False  # failed in a way a retry cannot mend (out of memory)
    started: float = 0.0  # monotonic time it started; 0 while it is only held
    deadline: float = 0.0
    timed_out: bool = False
    cancel_requested: bool = False
    abandoned: bool = False


# Not run to the end because the container is stopping: its message is requeued.
STATUS_ABANDONED = -1

Outcome = tuple[Job, int, int, bytes, float]
OnDone = Callable[[Job, int, int, bytes, float], None]
Skip = Callable[[Job], bool]


def _error(job: Job, exc: BaseException, started: float) -> Outcome:
    return (job, STATUS_ERROR, FORMAT_MSGPACK, failure.capture(exc), time.perf_counter() - started)


def _skipped(job: Job) -> Outcome:
    return (job, STATUS_CANCELLED, FORMAT_MSGPACK, b"", 0.0)


class Executor:
    """Runs the held jobs of one function, at most ``spec.max_inputs`` at once."""

    def __init__(
        self,
        fn: Callable[..., Any],
        spec: FunctionSpec,
        on_done: OnDone,
        *,
        on_stuck: Callable[[], None] = lambda: None,
        max_result_size: int | None = None,
        skip: Skip = lambda job: False,
        after_outcomes: Callable[[], None] = lambda: None,
        gauge: LoadGauge | None = None,
    ) -> None:
        self._fn = fn
        gauge = gauge if gauge is not None else LoadGauge()
        self._max_result_size = max_result_size
        self._spec = spec
        self._on_done = on_done
        self._on_stuck = on_stuck
        self._skip = skip
        self._loop = asyncio.get_running_loop()
        self._per_input: float | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._runner: _Tasks | _Threads
        if spec.is_async:
            self._runner = _Tasks(self._loop, self._call_async, spec, self._finished, skip, gauge)
        else:
            self._runner = _Threads(
                self._loop,
                self._call_sync,
                spec,
                self._finished,
                skip,
                gauge,
                after_outcomes,
                lambda: self._per_input,
            )
        # Jobs held, as one call (an outcome's caller asks this for every input).
        self.count_held: Callable[[], int] = self._runner.count_held

    # -- what it holds -------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Jobs held: waiting for a slot, or running."""
        return self._runner.count_held()

    @property
    def queued(self) -> int:
        """Jobs held that have not started."""
        return self._runner.queued

    @property
    def running(self) -> int:
        return self._runner.running

    @property
    def per_input(self) -> float | None:
        """Running mean of the seconds one input takes here (None before the first)."""
        return self._per_input

    def longest_running(self, now: float) -> float:
        """Seconds the longest-running input has run so far (0 if none runs)."""
        return self._runner.longest_running(now)

    def hold(self, jobs: list[Job]) -> None:
        """Take these jobs; each starts when a slot is free, in their order."""
        if self._watchdog is None:
            self._watchdog = self._loop.create_task(self._enforce_timeouts())
        self._runner.hold(jobs)

    def take_back(self, keep: int) -> list[Job]:
        """Remove and return the jobs not started yet beyond the first ``keep`` (in order)."""
        return self._runner.take_back(keep)

    # -- outcomes ------------------------------------------------------------------------

    def _finished(self, outcome: Outcome) -> None:
        job, status, _, _, seconds = outcome
        if status in (STATUS_OK, STATUS_ERROR) and job.started:
            if self._per_input is None:
                self._per_input = seconds
            else:
                self._per_input += SMOOTHING * (seconds - self._per_input)
        self._on_done(*outcome)

    async def _enforce_timeouts(self) -> None:
        # One sweep for all running inputs instead of a timer per input: a timer per input
        # costs a fifth of a fast function's whole per-input budget. Timeouts fire within
        # a tenth of their length (and 1 s at most) of being due.
        period = min(1.0, self._spec.timeout / 10)
        while True:
            await asyncio.sleep(period)
            overdue = self._runner.overdue(time.monotonic())
            if isinstance(self._runner, _Threads) and overdue:
                # A thread cannot be stopped: the callers get their timeout errors now,
                # and the container is replaced (its other inputs are redelivered).
                for job in overdue:
                    self._finished(_error(job, self._timeout_error(), job.deadline))
                self._on_stuck()

    def running_sync(self, matches: Callable[[Job], bool]) -> bool:
        """Whether a sync input that ``matches`` is running (a thread cannot be stopped)."""
        return isinstance(self._runner, _Threads) and self._runner.running_any(matches)

    def cancel(self, matches: Callable[[Job], bool]) -> int:
        """Cancel the running async inputs that ``matches`` (sync ones run to the end).

        Held inputs are skipped when their turn comes if the executor's ``skip`` says so.
        """
        return self._runner.cancel(matches)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs; False if ``timeout`` passed first."""
        deadline = self._loop.time() + timeout
        while self.running:
            if self._loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        """Stop: held jobs are abandoned (their messages go back), running async ones too."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for job in self._runner.take_back(0):
            job.abandoned = True
            self._on_done(job, STATUS_ABANDONED, FORMAT_MSGPACK, b"", 0.0)
        await self._runner.close()

    # -- running one input ---------------------------------------------------------------

    def _encode_result(self, value: Any, json: bool) -> tuple[int, bytes]:
        if json:
            fmt, data = FORMAT_JSON, encode_json(value, what=f"the result of {self._spec.tag}")
        else:
            fmt, data = encode_value(value, what=f"the result of {self._spec.tag}")
        if self._max_result_size is not None and len(data) > self._max_result_size:
            raise MessageTooLargeError(
                f"the result of {self._spec.tag} takes {len(data) / 2**20:.1f} MiB, and a result "
                f"may take at most {self._max_result_size / 2**20:.1f} MiB "
                "(WARREN_MAX_MESSAGE_SIZE): return a reference to the data instead"
            )
        return fmt, data

    def _timeout_error(self) -> FunctionTimeoutError:
        return FunctionTimeoutError(
            f"{self._spec.tag} ran longer than its timeout of {self._spec.timeout:g}s"
        )

    async def _call_async(self, job: Job) -> Outcome:
        started = time.perf_counter()
        # What the function prints is tagged with this input: the slot task's context, a
        # copy of its own, so the next job's set replaces it (no reset needed).
        current_input.set((job.invocation_id, job.index))
        try:
            args, kwargs = decode_call_args(job.fmt, job.data)
            value = await self._fn(*args, **kwargs)
            fmt, data = self._encode_result(value, job.json)
        except asyncio.CancelledError:
            if job.timed_out or job.cancel_requested or job.abandoned:
                raise
            # The function's own code raised CancelledError, with nobody cancelling it.
            error = ExecutionError(f"{self._spec.tag} raised CancelledError without a cancel")
            return self._failed(job, error, started)
        except BaseException as exc:
            return self._failed(job, exc, started)
        return (job, STATUS_OK, fmt, data, time.perf_counter() - started)

    def _call_sync(self, job: Job) -> Outcome:
        started = time.perf_counter()
        try:  # what it prints is tagged with this input: see _Threads._work
            args, kwargs = decode_call_args(job.fmt, job.data)
            value = self._fn(*args, **kwargs)
            fmt, data = self._encode_result(value, job.json)
        except BaseException as exc:
            return self._failed(job, exc, started)
        return (job, STATUS_OK, fmt, data, time.perf_counter() - started)

    def _failed(self, job: Job, exc: BaseException, started: float) -> Outcome:
        memory = self._spec.memory
        if isinstance(exc, MemoryError) and memory is not None and memory[1] is not None:
            # Past the limit the allocation failed: the caller learns why, and no retry
            # would fare better.
            job.no_retry = True
            exc = OutOfMemoryError(
                f"{self._spec.tag} went past its memory limit of {memory[1]} MiB "
                f"(memory={tuple(memory)}): give it more with with_options(memory=...)"
            )
        return _error(job, exc, started)


class _Runner:
    """What both runners share: the jobs held and not started, in their order, and the
    gauge their counts are written to."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        spec: FunctionSpec,
        finished: Callable[[Outcome], None],
        skip: Skip,
        gauge: LoadGauge,
    ) -> None:
        self._loop = loop
        self._spec = spec
        self._finished = finished
        self._skip = skip
        self._gauge = gauge
        self._queue: collections.deque[Job] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def count_held(self) -> int:
        """Jobs held: waiting, or running."""
        raise NotImplementedError

    def _take_from_queue(self, keep: int) -> list[Job]:
        taken: list[Job] = []
        while len(self._queue) > keep:
            taken.append(self._queue.pop())
        taken.reverse()
        return taken


class _Tasks(_Runner):
    """Async jobs: up to ``max_inputs`` slot tasks, each running held jobs one after another.

    A slot awaits each job's coroutine in turn, so a batch of inputs that do not wait on
    anything runs in one turn of the loop, with no task created per input. Cancelling a
    job (its invocation cancelled, its timeout passed) cancels the slot while it runs
    that job: the slot reports the job's outcome and goes on with the next.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        run: Callable[[Job], Coroutine[Any, Any, Outcome]],
        spec: FunctionSpec,
        finished: Callable[[Outcome], None],
        skip: Skip,
        gauge: LoadGauge,
    ) -> None:
        super().__init__(loop, spec, finished, skip, gauge)
        self._run = run
        self._slots: dict[asyncio.Task[None], Job | None] = {}
        self._busy = 0  # slots running a job: counted, not summed, on every change
        # Slots running a job or going on to the next, as the gauge counts them running:
        # a slot that ends a job and takes the next writes the gauge once, not twice.
        self._counted = 0
        self._closing = False

    @property
    def running(self) -> int:
        return self._busy

    def count_held(self) -> int:
        return len(self._queue) + self._busy

    def _measure(self) -> None:
        held = len(self._queue) + self._busy
        self._gauge.set(held, min(self._counted, held))

    def hold(self, jobs: list[Job]) -> None:
        self._queue.extend(jobs)
        self._measure()
        wanted = min(self._spec.max_inputs, len(self._slots) + len(self._queue))
        for _ in range(wanted - len(self._slots)):
            slot = self._loop.create_task(self._slot())
            self._slots[slot] = None

    async def _slot(self) -> None:
        slot = asyncio.current_task()
        assert slot is not None
        try:
            await self._run_held(slot)
        finally:
            # Gone from the table as it ends, not when its done-callbacks run: a batch
            # held meanwhile must not count it as a slot that will take its jobs.
            self._slots.pop(slot, None)

    async def _run_held(self, slot: asyncio.Task[None]) -> None:
        queue = self._queue
        counted = False  # whether the gauge counts this slot running
        try:
            while queue and not self._closing:
                job = queue.popleft()
                if self._skip(job):
                    if counted:
                        self._counted -= 1
                        counted = False
                    self._measure()
                    self._finished(_skipped(job))
                    continue
                job.started = time.monotonic()
                job.deadline = self._loop.time() + self._spec.timeout
                self._slots[slot] = job
                self._busy += 1
                if not counted:  # one more running
                    self._counted += 1
                    counted = True
                    self._measure()
                try:
                    outcome = await self._run(job)
                except asyncio.CancelledError:
                    if not (job.timed_out or job.cancel_requested or job.abandoned):
                        raise  # the slot itself is cancelled: not for one job
                    slot.uncancel()
                    outcome = self._outcome(job)
                finally:
                    self._slots[slot] = None
                    self._busy -= 1
                    if not queue or self._closing:  # it stops: one fewer running
                        self._counted -= 1
                        counted = False
                    self._measure()  # before the outcome is reported
                self._finished(outcome)
        finally:
            if counted:  # the queue was emptied another way (taken back, cancelled)
                self._counted -= 1
                self._measure()

    def _outcome(self, job: Job) -> Outcome:
        started = job.deadline - self._spec.timeout
        if job.timed_out:
            error = FunctionTimeoutError(
                f"{self._spec.tag} ran longer than its timeout of {self._spec.timeout:g}s"
            )
            return _error(job, error, started)
        if job.abandoned:
            return (job, STATUS_ABANDONED, FORMAT_MSGPACK, b"", 0.0)
        return _skipped(job)

    def take_back(self, keep: int) -> list[Job]:
        taken = self._take_from_queue(keep)
        self._measure()
        return taken

    def longest_running(self, now: float) -> float:
        return max((now - job.started for job in self._slots.values() if job), default=0.0)

    def overdue(self, now: float) -> list[Job]:
        late = []
        loop_now = self._loop.time()
        for slot, job in list(self._slots.items()):
            if job is not None and job.deadline <= loop_now and not job.timed_out:
                job.timed_out = True
                slot.cancel()
                late.append(job)
        return late

    def cancel(self, matches: Callable[[Job], bool]) -> int:
        cancelled = 0
        for slot, job in list(self._slots.items()):
            if job is not None and not (job.timed_out or job.cancel_requested) and matches(job):
                job.cancel_requested = True
                slot.cancel()
                cancelled += 1
        return cancelled

    async def close(self) -> None:
        self._closing = True
        for slot, job in list(self._slots.items()):
            if job is not None:
                job.abandoned = True  # not finished: its message goes back to the queue
                slot.cancel()
        if self._slots:
            await asyncio.gather(*self._slots, return_exceptions=True)


class _Threads(_Runner):
    """Sync jobs: up to ``max_inputs`` threads, each taking held jobs one after another."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        run: Callable[[Job], Outcome],
        spec: FunctionSpec,
        finished: Callable[[Outcome], None],
        skip: Skip,
        gauge: LoadGauge,
        after_outcomes: Callable[[], None],
        per_input: Callable[[], float | None],
    ) -> None:
        super().__init__(loop, spec, finished, skip, gauge)
        self._run = run
        self._after_outcomes = after_outcomes
        self._per_input = per_input
        self._lock = threading.Lock()
        # An idle thread sleeps on this queue until given a token (a C-level wait: a
        # condition variable's Python machinery would cost a fast function more than
        # the function itself). Whoever hands out a token takes that thread off idle.
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._running: set[Job] = set()
        self._busy = 0  # threads running a job or going on to the next (see _measure)
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self._done: collections.deque[Outcome] = collections.deque()
        self._wake_scheduled = False
        # Set (under the lock) while the loop collects outcomes every COLLECT_SECONDS, its
        # timer armed whenever a job is held: a thread then wakes the loop only when no
        # held job waits to run.
        self._collecting = False
        self._collector: asyncio.TimerHandle | None = None

    @property
    def running(self) -> int:
        return len(self._running)

    def count_held(self) -> int:
        return len(self._queue) + len(self._running)

    def _measure(self) -> None:
        """Write the counts to the gauge (under the lock: the threads change them too).

        Running there is the threads busy: running a job, or between one and the next
        (a thread that goes on to the next job does not write again)."""
        held = len(self._queue) + len(self._running)
        self._gauge.set(held, min(self._busy, held))

    def hold(self, jobs: list[Job]) -> None:
        with self._lock:
            self._queue.extend(jobs)
            self._measure()
            busy = len(self._running) + len(self._queue)
            new_threads = max(0, min(self._spec.max_inputs, busy) - len(self._threads))
            wakes = min(self._idle, len(jobs))
            self._idle -= wakes
            self._arm_collector()
        for _ in range(wakes):
            self._wake.put(None)
        for _ in range(new_threads):
            thread = threading.Thread(target=self._work, name="warren-input", daemon=True)
            self._threads.append(thread)
            thread.start()

    def take_back(self, keep: int) -> list[Job]:
        with self._lock:  # the threads take jobs from the queue too
            taken = self._take_from_queue(keep)
            self._measure()
            return taken

    def longest_running(self, now: float) -> float:
        with self._lock:
            return max((now - job.started for job in self._running), default=0.0)

    def overdue(self, now: float) -> list[Job]:
        """Running jobs past their deadline, each reported once (marked timed out)."""
        with self._lock:
            late = [job for job in self._running if job.deadline <= now and not job.timed_out]
            for job in late:
                job.timed_out = True
        return late

    def running_any(self, matches: Callable[[Job], bool]) -> bool:
        with self._lock:
            return any(matches(job) for job in self._running)

    def cancel(self, matches: Callable[[Job], bool]) -> int:
        return 0  # a thread cannot be interrupted; held jobs are skipped when they come up

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            self._collecting = False
            wakes, self._idle = self._idle, 0
        if self._collector is not None:
            self._collector.cancel()
            self._collector = None
        for _ in range(wakes):
            self._wake.put(None)

    def _next(self, busy: bool) -> Job | None:
        """The next job for a thread; ``busy`` if it just ended one (the gauge still
        counts it running: a job ended is written by :meth:`_deliver`, before its outcome
        is reported, and a thread that goes on to the next job changes nothing there)."""
        while True:
            with self._lock:
                if self._queue:
                    job = self._queue.popleft()
                    job.started = time.monotonic()
                    job.deadline = job.started + self._spec.timeout
                    self._running.add(job)
                    if not busy:  # one more running
                        self._busy += 1
                        self._measure()
                    return job
                if busy:  # one fewer running: it goes idle
                    self._busy -= 1
                    self._measure()
                    busy = False
                if self._closed:
                    return None
                self._idle += 1
            self._wake.get()

    def _work(self) -> None:
        # The job this thread runs, for what it prints (output.running_input).
        cell: list[Any] = [None]
        sync_input.cell = cell
        job = self._next(False)
        while job is not None:
            cell[0] = job
            outcome = _skipped(job) if self._skip(job) else self._run(job)
            cell[0] = None
            with self._lock:
                self._running.discard(job)
                self._done.append(outcome)
                wake = not self._wake_scheduled and not (self._collecting and self._queue)
                self._wake_scheduled = self._wake_scheduled or wake
            if wake:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:
                    return  # the loop is closed: the container is going away
            job = self._next(True)

    def _deliver(self) -> None:
        per_input = self._per_input()
        fast = per_input is not None and per_input < COLLECT_SECONDS
        with self._lock:
            outcomes = list(self._done)
            self._done.clear()
            self._measure()  # once per wake-up: none of these outcomes is counted any more
            self._wake_scheduled = False
            # Decided with the outcomes taken, under the lock: an outcome added without a
            # wake-up is always one a collection still armed will take.
            self._collecting = fast and not self._closed
            if self._running or self._queue:
                self._arm_collector()
        for outcome in outcomes:
            if not outcome[0].timed_out:  # a timed-out job's error was reported already
                self._finished(outcome)
        self._after_outcomes()  # this wake-up's outcomes are all in: send them now

    def _arm_collector(self) -> None:
        if self._collecting and self._collector is None:
            self._collector = self._loop.call_later(COLLECT_SECONDS, self._collect)

    def _collect(self) -> None:
        self._collector = None
        self._deliver()
