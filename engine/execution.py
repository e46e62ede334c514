"""Running a function's inputs inside a container: async ones as tasks, sync ones on threads.

The executor knows nothing of the broker. It takes :class:`Job` objects and reports
each outcome once through a callback on the event loop, as
``(job, status, format, data, seconds)``. An input cancelled because its invocation
was cancelled reports ``STATUS_CANCELLED`` so that its message can still be settled;
one cut short because the container is stopping reports ``STATUS_ABANDONED``, and its
message goes back to the queue for another container.

Sync functions run on at most ``max_inputs`` worker threads fed from one queue; their
outcomes come back to the loop in bulk (one wake-up for however many finished since
the last), which is what keeps a fast sync function cheap per input.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdk import failure
from sdk.codec import FORMAT_JSON, FORMAT_MSGPACK, decode_call_args, encode_json, encode_value
from sdk.exceptions import (
    ExecutionError,
    FunctionTimeoutError,
    MessageTooLargeError,
    OutOfMemoryError,
)
from sdk.protocol import STATUS_CANCELLED, STATUS_ERROR, STATUS_OK, FunctionSpec


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
    deadline: float = 0.0
    timed_out: bool = False
    cancel_requested: bool = False
    abandoned: bool = False


# Not run to the end because the container is stopping: its message is requeued.
STATUS_ABANDONED = -1

Outcome = tuple[Job, int, int, bytes, float]
OnDone = Callable[[Job, int, int, bytes, float], None]


def _error(job: Job, exc: BaseException, started: float) -> Outcome:
    return (job, STATUS_ERROR, FORMAT_MSGPACK, failure.capture(exc), time.perf_counter() - started)


class Executor:
    """Runs jobs of one function with at most ``spec.max_inputs`` at once."""

    def __init__(
        self,
        fn: Callable[..., Any],
        spec: FunctionSpec,
        on_done: OnDone,
        on_stuck: Callable[[], None] = lambda: None,
        max_result_size: int | None = None,
    ) -> None:
        self._fn = fn
        self._max_result_size = max_result_size
        self._spec = spec
        self._on_done = on_done
        self._on_stuck = on_stuck
        self._loop = asyncio.get_running_loop()
        self._tasks: dict[asyncio.Task[Outcome], Job] = {}
        self._threads: _ThreadWorkers | None = None
        self._watchdog: asyncio.Task[None] | None = None
        if not spec.is_async:
            self._threads = _ThreadWorkers(self._loop, self._call_sync, spec.max_inputs, on_done)

    @property
    def running(self) -> int:
        threads = self._threads.pending if self._threads is not None else 0
        return len(self._tasks) + threads

    def submit(self, job: Job) -> None:
        if self._watchdog is None:
            self._watchdog = self._loop.create_task(self._enforce_timeouts())
        if self._threads is not None:
            self._threads.submit(job, self._spec.timeout)
            return
        job.deadline = self._loop.time() + self._spec.timeout
        task = self._loop.create_task(self._call_async(job))
        self._tasks[task] = job
        task.add_done_callback(self._task_done)

    async def _enforce_timeouts(self) -> None:
        # One sweep for all running inputs instead of a timer per input: a timer per input
        # costs a fifth of a fast function's whole per-input budget. Timeouts fire within
        # a tenth of their length (and 1 s at most) of being due.
        period = min(1.0, self._spec.timeout / 10)
        while True:
            await asyncio.sleep(period)
            now = self._loop.time()
            for task, job in list(self._tasks.items()):
                if job.deadline <= now and not job.timed_out:
                    job.timed_out = True
                    task.cancel()
            if self._threads is not None and (overdue := self._threads.overdue(time.monotonic())):
                # A thread cannot be stopped: the callers get their timeout errors now,
                # and the container is replaced (its other inputs are redelivered).
                for job in overdue:
                    self._on_done(*_error(job, self._timeout_error(), job.deadline))
                self._on_stuck()

    def running_sync(self, invocation_ids: set[str]) -> bool:
        """Whether a sync input of these invocations is running (a thread cannot be stopped)."""
        return self._threads is not None and self._threads.running_any(invocation_ids)

    def cancel(self, invocation_ids: set[str]) -> int:
        """Cancel running async inputs of these invocations (sync ones run to the end)."""
        cancelled = 0
        for task, job in list(self._tasks.items()):
            if job.invocation_id in invocation_ids:
                job.cancel_requested = True
                task.cancel()
                cancelled += 1
        return cancelled

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs; False if ``timeout`` passed first."""
        deadline = self._loop.time() + timeout
        while self.running:
            if self._loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for task, job in list(self._tasks.items()):
            job.abandoned = True  # not finished: its message goes back to the queue
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._threads is not None:
            self._threads.close()

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

    def _task_done(self, task: asyncio.Task[Outcome]) -> None:
        job = self._tasks.pop(task)
        if task.cancelled() and job.timed_out:
            self._on_done(*_error(job, self._timeout_error(), job.deadline - self._spec.timeout))
        elif task.cancelled() and job.abandoned:
            self._on_done(job, STATUS_ABANDONED, FORMAT_MSGPACK, b"", 0.0)
        elif task.cancelled() and job.cancel_requested:
            self._on_done(job, STATUS_CANCELLED, FORMAT_MSGPACK, b"", 0.0)
        elif task.cancelled():  # the function's own code raised CancelledError
            error = ExecutionError(f"{self._spec.tag} raised CancelledError without a cancel")
            self._on_done(*_error(job, error, job.deadline - self._spec.timeout))
        else:
            self._on_done(*task.result())

    async def _call_async(self, job: Job) -> Outcome:
        started = time.perf_counter()
        try:
            args, kwargs = decode_call_args(job.fmt, job.data)
            value = await self._fn(*args, **kwargs)
            fmt, data = self._encode_result(value, job.json)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            return self._failed(job, exc, started)
        return (job, STATUS_OK, fmt, data, time.perf_counter() - started)

    def _call_sync(self, job: Job) -> Outcome:
        started = time.perf_counter()
        try:
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


class _ThreadWorkers:
    """Up to ``size`` threads running sync jobs; outcomes handed to the loop in bulk."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        run: Callable[[Job], Outcome],
        size: int,
        on_done: OnDone,
    ) -> None:
        self._loop = loop
        self._run = run
        self._size = size
        self._on_done = on_done
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._done: collections.deque[Outcome] = collections.deque()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._running: set[Job] = set()
        self._queued = 0
        self.active = 0
        self._wake_scheduled = False

    def submit(self, job: Job, timeout: float) -> None:
        job.deadline = time.monotonic() + timeout
        with self._lock:
            self._queued += 1
            spawn = (
                self.active + self._queued > len(self._threads) and len(self._threads) < self._size
            )
        if spawn:
            thread = threading.Thread(target=self._work, name="warren-input", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._jobs.put(job)

    def overdue(self, now: float) -> list[Job]:
        """Running jobs past their deadline, each reported once (marked timed out)."""
        with self._lock:
            late = [job for job in self._running if job.deadline <= now and not job.timed_out]
            for job in late:
                job.timed_out = True
        return late

    def running_any(self, invocation_ids: set[str]) -> bool:
        with self._lock:
            return any(job.invocation_id in invocation_ids for job in self._running)

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        return self._queued + self.active

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._queued -= 1
                self.active += 1
                self._running.add(job)
            outcome = self._run(job)
            with self._lock:
                self.active -= 1
                self._running.discard(job)
                self._done.append(outcome)
                wake = not self._wake_scheduled
                self._wake_scheduled = True
            if wake:
                try:
                    self._loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:
                    return  # the loop is closed: the container is going away

    def _deliver(self) -> None:
        with self._lock:
            outcomes = list(self._done)
            self._done.clear()
            self._wake_scheduled = False
        for outcome in outcomes:
            if not outcome[0].timed_out:  # a timed-out job's error was reported already
                self._on_done(*outcome)
