"""Holding is not running: inputs travel in batches, containers run at most max_inputs.

Every test here proves both sides of it: what ran at once (intervals the function
records in its own process, with its own clock) and how the inputs travelled (the
messages and inputs the pool's containers say they received).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import warren
from support import EngineProcess, engine_running, lines, max_overlap, wait_until

app = warren.App("test-batching")


def record(path: str, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


@app.function(max_containers=1, max_inputs=1)
def one_at_a_time(log: str, x: int) -> int:
    started = time.perf_counter()
    time.sleep(0.002)
    record(log, f"{started} {time.perf_counter()} {os.getpid()}")
    return x


@app.function(max_containers=4)
def fast_then_slow(log: str, seconds: float) -> float:
    time.sleep(seconds)
    if seconds:
        record(log, f"{os.getpid()}")
    return seconds


@app.function(max_containers=1)
def double(x: int) -> int:
    return 2 * x


@app.function(max_containers=1, max_inputs=1000)
async def many_at_once(x: int) -> int:
    return x


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    with app.run():
        yield app


def _received(function: warren.Function[..., object], inputs: int) -> dict[str, int]:
    """The pool's counts once its containers have reported ``inputs`` inputs."""
    stats: dict[str, int] = {}

    def reported() -> bool:
        stats.update(function.get_current_stats())
        return stats["inputs_received"] >= inputs

    assert wait_until(reported, 10), stats
    return stats


def test_one_slot_runs_its_inputs_one_at_a_time_while_they_travel_in_batches(
    tmp_path: Path,
) -> None:
    # Given a function with one container of one slot (max_containers=1, max_inputs=1)
    log = tmp_path / "intervals"
    # When 200 inputs are mapped over it
    assert list(one_at_a_time.map([str(log)] * 200, range(200))) == list(range(200))
    # Then no two of them ever ran at once, in the one container
    runs = [line.split() for line in lines(log)]
    assert len(runs) == 200
    assert len({pid for _, _, pid in runs}) == 1
    assert max_overlap([(float(start), float(end)) for start, end, _ in runs]) == 1
    # And they travelled in fewer messages than inputs: the container held batches
    stats = _received(one_at_a_time, 200)
    assert stats["messages_received"] < 100, stats


def test_a_map_whose_later_inputs_turn_slow_spreads_them_over_the_containers(
    tmp_path: Path,
) -> None:
    # Given a map of fast inputs (large batches) whose last twelve sleep 0.4 s each
    log = tmp_path / "slow-runs"
    seconds = [0.0] * 3000 + [0.4] * 12
    started = time.monotonic()
    assert list(fast_then_slow.map([str(log)] * len(seconds), seconds)) == seconds
    elapsed = time.monotonic() - started
    # Then the slow ones did not all run in the container that got them in a batch:
    # it handed back those it had not started, and the other containers ran them
    pids = lines(log)
    assert len(pids) == 12
    assert len(set(pids)) >= 3, pids
    assert elapsed < 12 * 0.4, elapsed  # one after another, in one container, it is 4.8 s


async def test_concurrent_remote_calls_share_messages_and_each_gets_its_own_result() -> None:
    # Given 200 calls made at once, as an async service under load makes them
    before = (await double.get_current_stats.aio())["messages_received"]
    results = await asyncio.gather(*(double.remote.aio(i) for i in range(200)))
    # Then each caller got its own result
    assert results == [2 * i for i in range(200)]
    # And they travelled in a few messages, not one each
    stats: dict[str, int] = {}

    async def reported() -> bool:
        stats.update(await double.get_current_stats.aio())
        return stats["inputs_received"] >= 200

    for _ in range(100):
        if await reported():
            break
        await asyncio.sleep(0.1)
    assert stats["messages_received"] - before < 20, stats


def test_batches_held_one_after_another_by_a_thousand_slot_container_all_run() -> None:
    assert list(many_at_once.map(range(20_000))) == list(range(20_000))


def test_a_lone_call_is_sent_at_once_and_answered() -> None:
    started = time.monotonic()
    assert double.remote(21) == 42
    assert time.monotonic() - started < 2


default_app = warren.App("test-default-containers")


@default_app.function()
def sleeps(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_with_no_options_a_function_gets_a_container_per_core_of_the_engine_node(
    tmp_path: Path,
) -> None:
    # Given an engine node that says it has 3 cores, and a function with no options
    with engine_running(tmp_path / "state", env={"WARREN_NODE_CPUS": "3"}) as engine:
        assert isinstance(engine, EngineProcess)
        default_app.deploy()
        handle = warren.Function.from_name("test-default-containers", "sleeps")
        # When a map keeps it busy
        pids = list(handle.map([0.5] * 9))
        # Then it ran on three containers, and the autoscaler's bound says why
        assert len(set(pids)) == 3
        assert handle.get_current_stats()["autoscaler"]["max_containers"] == 3
