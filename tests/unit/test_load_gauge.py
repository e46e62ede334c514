"""The load gauge: a container's inputs held and running, as its engine reads them, now."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from warren.wire.codec import encode_call_args
from warren.wire.spec import FunctionSpec
from warren_engine.container.executor import Executor, Job
from warren_engine.pipe.gauge import LoadGauge


def _jobs(count: int) -> list[Job]:
    jobs = []
    for index in range(count):
        fmt, data = encode_call_args((index,), {})
        jobs.append(Job("inv", index, fmt, data, delivery=None))
    return jobs


class Watcher:
    """Outcomes, and what the engine's side of the gauge read as each was reported."""

    def __init__(self, gauge: LoadGauge, expected: int) -> None:
        self.engine_side = LoadGauge(gauge.shared)
        self.expected = expected
        self.reported = 0
        self.seen: list[tuple[int, int]] = []
        self.all_in = asyncio.Event()

    def __call__(self, job: Job, status: int, fmt: int, data: bytes, seconds: float) -> None:
        self.reported += 1
        self.seen.append(self.engine_side.read())
        if self.reported >= self.expected:
            self.all_in.set()


def test_what_one_side_writes_the_other_reads_through_the_same_memory() -> None:
    container_side = LoadGauge()
    engine_side = LoadGauge(container_side.shared)
    assert engine_side.read() == (0, 0)
    container_side.set(7, 3)
    assert engine_side.read() == (7, 3)
    container_side.set(0, 0)
    assert engine_side.read() == (0, 0)


def test_the_received_counts_are_kept_apart_from_the_load() -> None:
    container_side = LoadGauge()
    engine_side = LoadGauge(container_side.shared)
    container_side.set(3, 1)
    container_side.count_received(2, 50)
    assert engine_side.read() == (3, 1)
    assert engine_side.received() == (2, 50)


def test_a_reader_never_sees_more_running_than_held() -> None:
    gauge = LoadGauge()
    gauge.set(1, 4)  # as a reader between two writes could find them
    assert gauge.read() == (1, 1)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_the_gauge_counts_held_and_running_inputs_and_no_input_once_it_is_reported(
    is_async: bool,
) -> None:
    # Given a function with 2 slots and 5 inputs held at once, the first ones blocked
    release = threading.Event()

    def work_sync(x: int) -> int:
        release.wait(10)
        return x

    async def work_async(x: int) -> int:
        while not release.is_set():
            await asyncio.sleep(0.005)
        return x

    gauge = LoadGauge()
    watcher = Watcher(gauge, 5)
    work: Any = work_async if is_async else work_sync
    executor = Executor(work, FunctionSpec("work", is_async, max_inputs=2), watcher, gauge=gauge)
    executor.hold(_jobs(5))
    # Then while they are blocked the engine reads 5 held, 2 running
    for _ in range(200):
        if watcher.engine_side.read() == (5, 2):
            break
        await asyncio.sleep(0.005)
    assert watcher.engine_side.read() == (5, 2)
    # When they are let go
    release.set()
    await asyncio.wait_for(watcher.all_in.wait(), 10)
    # Then as each outcome was reported the gauge no longer counted it, and at the end
    # (the moment a caller has every result) it reads nothing held, nothing running
    for reported, (held, running) in enumerate(watcher.seen, start=1):
        assert held <= 5 - reported and running <= held
    assert watcher.engine_side.read() == (0, 0)
    await executor.close()


async def test_inputs_taken_back_leave_the_gauge_at_once() -> None:
    # Given one slot blocked and four inputs waiting for it
    release = threading.Event()
    gauge = LoadGauge()
    watcher = Watcher(gauge, 1)
    executor = Executor(
        lambda x: release.wait(10), FunctionSpec("work", False, max_inputs=1), watcher, gauge=gauge
    )
    executor.hold(_jobs(5))
    for _ in range(200):
        if gauge.read() == (5, 1):
            break
        await asyncio.sleep(0.005)
    # When the container hands back all but one of the waiting inputs
    taken = executor.take_back(1)
    # Then the gauge counts only what it still holds
    assert len(taken) == 3
    assert gauge.read() == (2, 1)
    release.set()
    await executor.close()


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_an_input_that_follows_others_on_the_same_slot_is_counted_running(
    is_async: bool,
) -> None:
    # Given one slot, three fast inputs, then one that blocks
    release = threading.Event()

    def work_sync(x: int) -> int:
        if x == 3:
            release.wait(10)
        return x

    async def work_async(x: int) -> int:
        while x == 3 and not release.is_set():
            await asyncio.sleep(0.005)
        return x

    gauge = LoadGauge()
    watcher = Watcher(gauge, 4)
    work: Any = work_async if is_async else work_sync
    executor = Executor(work, FunctionSpec("work", is_async, max_inputs=1), watcher, gauge=gauge)
    executor.hold(_jobs(4))
    # Then once the fast ones are reported, the blocked one is held and running
    for _ in range(200):
        if watcher.reported == 3 and watcher.engine_side.read() == (1, 1):
            break
        await asyncio.sleep(0.005)
    assert (watcher.reported, watcher.engine_side.read()) == (3, (1, 1))
    release.set()
    await asyncio.wait_for(watcher.all_in.wait(), 10)
    assert watcher.engine_side.read() == (0, 0)
    await executor.close()
