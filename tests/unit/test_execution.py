"""The executor: it holds every input it is given and runs at most max_inputs at once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from warren.wire.codec import decode_value, encode_call_args
from warren.wire.protocol import STATUS_CANCELLED, STATUS_ERROR, STATUS_OK
from warren.wire.spec import FunctionSpec
from warren_engine.container.executor import Executor, Job


def _jobs(values: list[Any], invocation: str = "inv") -> list[Job]:
    jobs = []
    for index, value in enumerate(values):
        fmt, data = encode_call_args((value,), {})
        jobs.append(Job(invocation, index, fmt, data, delivery=None))
    return jobs


class Outcomes:
    def __init__(self, expected: int) -> None:
        self.items: list[tuple[int, int, Any]] = []
        self.expected = expected
        self.all_in = asyncio.Event()

    def __call__(self, job: Job, status: int, fmt: int, data: bytes, seconds: float) -> None:
        value = decode_value(fmt, data) if status == STATUS_OK else None
        self.items.append((job.index, status, value))
        if len(self.items) >= self.expected:
            self.all_in.set()


async def test_a_sync_batch_larger_than_its_slots_runs_in_turn_on_one_thread() -> None:
    # Given a sync function with one slot, and a batch of 50 inputs held at once
    threads: set[int] = set()
    running, most = [0], [0]
    lock = threading.Lock()

    def work(x: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        threads.add(threading.get_ident())
        time.sleep(0.001)
        with lock:
            running[0] -= 1
        return x * 2

    outcomes = Outcomes(50)
    executor = Executor(work, FunctionSpec("work", False, max_inputs=1), outcomes)
    executor.hold(_jobs(list(range(50))))
    assert executor.held == 50
    await asyncio.wait_for(outcomes.all_in.wait(), 10)
    # Then every input ran, one at a time, in order, all on the same thread
    assert [index for index, _, _ in outcomes.items] == list(range(50))
    assert [value for _, _, value in outcomes.items] == [2 * i for i in range(50)]
    assert most[0] == 1 and len(threads) == 1
    assert executor.held == 0
    await executor.close()


async def test_async_slots_run_at_most_max_inputs_at_once_and_a_cancel_spares_the_rest() -> None:
    # Given an async function with 2 slots and 6 held inputs, one of them cancelled while
    # it runs
    running, most = [0], [0]

    async def work(x: int) -> int:
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            await asyncio.sleep(10 if x == 0 else 0.01)
        finally:
            running[0] -= 1
        return x

    outcomes = Outcomes(6)
    executor = Executor(work, FunctionSpec("work", True, max_inputs=2), outcomes)
    executor.hold(_jobs(list(range(6))))
    await asyncio.sleep(0.05)
    assert executor.cancel(lambda job: job.index == 0) == 1
    await asyncio.wait_for(outcomes.all_in.wait(), 5)
    # Then the cancelled one reports so, its slot went on with the others, two at most ran
    statuses = {index: status for index, status, _ in outcomes.items}
    assert statuses[0] == STATUS_CANCELLED
    assert all(statuses[i] == STATUS_OK for i in range(1, 6))
    assert most[0] == 2
    await executor.close()


async def test_a_timeout_counts_from_when_an_input_starts_not_from_when_it_was_held() -> None:
    # Given one slot, a timeout of 0.3 s, and three inputs of 0.2 s held at once
    async def work(x: int) -> int:
        await asyncio.sleep(0.2)
        return x

    outcomes = Outcomes(3)
    spec = FunctionSpec("work", True, max_inputs=1, timeout=0.3)
    executor = Executor(work, spec, outcomes)
    executor.hold(_jobs([0, 1, 2]))
    await asyncio.wait_for(outcomes.all_in.wait(), 5)
    # Then none timed out, though the last waited 0.4 s before it started
    assert [status for _, status, _ in outcomes.items] == [STATUS_OK] * 3
    await executor.close()


async def test_an_input_past_its_timeout_fails_and_its_slot_goes_on() -> None:
    async def work(x: int) -> int:
        await asyncio.sleep(5 if x == 0 else 0)
        return x

    outcomes = Outcomes(2)
    spec = FunctionSpec("work", True, max_inputs=1, timeout=0.2)
    executor = Executor(work, spec, outcomes)
    executor.hold(_jobs([0, 1]))
    await asyncio.wait_for(outcomes.all_in.wait(), 5)
    assert [(index, status) for index, status, _ in outcomes.items] == [
        (0, STATUS_ERROR),
        (1, STATUS_OK),
    ]
    await executor.close()


async def test_inputs_not_started_can_be_taken_back_and_held_ones_are_skipped_if_cancelled() -> (
    None
):
    gate = asyncio.Event()

    async def work(x: int) -> int:
        await gate.wait()
        return x

    outcomes = Outcomes(3)
    cancelled = {"skip"}
    executor = Executor(
        work,
        FunctionSpec("work", True, max_inputs=1),
        outcomes,
        skip=lambda job: job.invocation_id in cancelled,
    )
    first = _jobs([0, 1, 2, 3])
    skipped = _jobs([9], invocation="skip")
    executor.hold([*first[:2], *skipped, *first[2:]])
    await asyncio.sleep(0.01)
    # When those not started beyond the first two are taken back
    taken = executor.take_back(keep=2)
    assert [job.index for job in taken] == [2, 3]
    assert (executor.queued, executor.running) == (2, 1)
    gate.set()
    await asyncio.wait_for(outcomes.all_in.wait(), 5)
    # Then the others ran, and the held input of a cancelled invocation was skipped
    assert sorted(outcomes.items, key=str) == sorted(
        [(0, STATUS_OK, 0), (1, STATUS_OK, 1), (0, STATUS_CANCELLED, None)], key=str
    )
    await executor.close()


def test_a_pipe_reader_keeps_a_message_that_arrives_in_pieces_until_it_is_whole() -> None:
    import multiprocessing

    from warren_engine.pipe.pipes import PipeReader

    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    reader = PipeReader(reader_end)
    big = b"x" * 300_000  # larger than a pipe's buffer: written in pieces
    writer = threading.Thread(
        target=lambda: (writer_end.send_bytes(b"a"), writer_end.send_bytes(big))
    )
    writer.start()
    got: list[bytes] = []
    while len(got) < 2:
        messages, ended = reader.read()
        got += messages
        assert not ended
    writer.join()
    assert got == [b"a", big]
    writer_end.close()
    assert reader.read() == ([], True)
    reader.close()


async def test_a_batch_held_as_the_last_one_ends_is_run_all_the_same() -> None:
    # Given slots that have just run out of work (ended, their callbacks not yet run)
    async def work(x: int) -> int:
        return x

    outcomes = Outcomes(2000)
    executor = Executor(work, FunctionSpec("work", True, max_inputs=1000), outcomes)
    executor.hold(_jobs(list(range(1000))))
    await asyncio.sleep(0)  # the slots ran their jobs and ended; their callbacks wait
    # When the next batch comes in right then
    executor.hold(_jobs(list(range(1000)), invocation="second"))
    # Then it runs too
    await asyncio.wait_for(outcomes.all_in.wait(), 5)
    assert len(outcomes.items) == 2000
    await executor.close()


async def test_outcomes_of_fast_sync_inputs_are_collected_in_groups() -> None:
    # Given a sync function of about 2 ms (which lets the loop run meanwhile), 40 inputs
    def work(x: int) -> int:
        time.sleep(0.002)
        return x

    outcomes = Outcomes(41)
    wakes: list[int] = []
    executor = Executor(
        work,
        FunctionSpec("work", False, max_inputs=1),
        outcomes,
        after_outcomes=lambda: wakes.append(len(outcomes.items)),
    )
    executor.hold(_jobs([-1]))  # the first one teaches the executor how long an input takes
    while not outcomes.items:
        await asyncio.sleep(0.001)
    executor.hold(_jobs(list(range(40))))
    await asyncio.wait_for(outcomes.all_in.wait(), 10)
    # Then every outcome came, in order, but the loop took them several at a time
    assert [value for _, _, value in outcomes.items] == list(range(-1, 40))
    assert len(wakes) < 20
    await executor.close()
