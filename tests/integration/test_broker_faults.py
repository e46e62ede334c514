"""Broker faults in the middle of real work: nothing is lost, nothing is seen twice.

These tests stop RabbitMQ (and always start it again) or close every connection to it;
each proves the fault happened: the engine's containers reconnected after it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import warren
from faults import (
    Checker,
    close_all_connections,
    connection_starts,
    dead_letters,
    reconnected_since,
    record_execution,
    restart_broker,
)
from support import lines, running_in_own_environment, wait_until

ENVIRONMENT = f"test-faults-{uuid.uuid4().hex[:8]}"
INPUTS = 20_000
app = warren.App("test-broker-faults", environment=ENVIRONMENT)


@app.function(max_containers=2, max_inputs=10)
def step(log: str, i: int) -> int:
    record_execution(log, i)
    time.sleep(0.01)
    return i


@app.function()
def slow_double(log: str, x: int, seconds: float) -> int:
    record_execution(log, x)
    time.sleep(seconds)
    return 2 * x


@app.function(max_containers=2)
def echo_slowly(log: str, x: int) -> int:
    record_execution(log, x)
    time.sleep(0.5)
    return x


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    with running_in_own_environment(app, ENVIRONMENT):
        yield app


def map_with_faults(
    log: Path, inject: Callable[[], None], at: list[int]
) -> tuple[list[int], list[float]]:
    """Map over INPUTS, calling ``inject`` on a thread when result number ``at[k]`` arrives."""
    results: list[int] = []
    injected: list[float] = []
    pending = list(at)
    faults: list[threading.Thread] = []

    def fault() -> None:
        inject()
        injected.append(time.monotonic())

    for value in step.map([str(log)] * INPUTS, range(INPUTS)):
        results.append(value)
        if pending and len(results) >= pending[0]:
            pending.pop(0)
            faults[-1:] and faults[-1].join()
            faults.append(threading.Thread(target=fault))
            faults[-1].start()
    for thread in faults:
        thread.join()
    return results, injected


def check_every_index_once_in_order(results: list[int], log: Path) -> None:
    assert results == list(range(INPUTS))
    checker = Checker(log)
    for index in results:
        checker.outcome(index)
    checker.check(list(range(INPUTS)))


@pytest.mark.timeout(300)
def test_a_broker_restart_during_a_long_map_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "executions"
    before = connection_starts()
    # When RabbitMQ is stopped for 5 s at about a third of the map
    results, injected = map_with_faults(log, restart_broker, at=[INPUTS // 3])
    finished = time.monotonic()
    # Then the fault happened during the map, and every container reconnected after it
    assert injected and injected[0] < finished
    assert wait_until(lambda: bool(reconnected_since(before)), 30)
    # And every index came back exactly once, in order; no input was dead-lettered
    check_every_index_once_in_order(results, log)
    assert dead_letters(ENVIRONMENT) == []


@pytest.mark.timeout(300)
def test_closing_every_connection_three_times_during_a_map_loses_nothing(tmp_path: Path) -> None:
    log = tmp_path / "executions"
    before = connection_starts()
    quarter = INPUTS // 4
    results, injected = map_with_faults(
        log, close_all_connections, at=[quarter, 2 * quarter, 3 * quarter]
    )
    assert len(injected) == 3
    # (the map may end before the containers are back from the last close: wait for them)
    assert wait_until(lambda: bool(reconnected_since(before)), 30)
    check_every_index_once_in_order(results, log)
    assert dead_letters(ENVIRONMENT) == []  # no healthy input was counted as a crash


@pytest.mark.timeout(300)
def test_spawned_calls_made_before_a_broker_restart_are_fetched_after_it(tmp_path: Path) -> None:
    log = tmp_path / "executions"
    done = slow_double.spawn(str(log), 1, 0.0)
    running = slow_double.spawn(str(log), 2, 3.0)
    assert wait_until(lambda: len(lines(log)) >= 2, 30)  # one finished, one running
    before = connection_starts()
    restart_broker()
    assert wait_until(lambda: bool(reconnected_since(before)), 30)
    assert warren.FunctionCall.from_id(done.object_id).get(timeout=60) == 2
    assert warren.FunctionCall.from_id(running.object_id).get(timeout=60) == 4


@pytest.mark.timeout(300)
def test_a_broker_restart_loses_no_remote_call_nor_map_input_in_flight(tmp_path: Path) -> None:
    # Given 10 threads each making 5 calls in turn, and a 20,000-input map, in flight
    call_log, map_log = tmp_path / "calls", tmp_path / "map"
    outcomes: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def caller(thread: int) -> None:
        for k in range(5):
            call_id = thread * 5 + k
            try:
                outcomes.append((call_id, echo_slowly.remote(str(call_log), call_id)))
            except BaseException as exc:
                errors.append(exc)

    callers = [threading.Thread(target=caller, args=(t,)) for t in range(10)]
    before = connection_starts()
    for thread in callers:
        thread.start()
    # When RabbitMQ is stopped for 5 s at a third of the map (the calls' and results'
    # messages are transient: the restart loses those in the broker)
    results, injected = map_with_faults(map_log, restart_broker, at=[INPUTS // 3])
    for thread in callers:
        thread.join(120)
    assert injected
    assert wait_until(lambda: bool(reconnected_since(before)), 30)
    # Then every call returned its own result, once
    assert not errors, errors[:3]
    assert all(call_id == value for call_id, value in outcomes)
    checker = Checker(call_log)
    for call_id, _ in outcomes:
        checker.outcome(call_id)
    checker.check(list(range(50)))
    # And the map yielded every result once, in order
    check_every_index_once_in_order(results, map_log)
    assert dead_letters(ENVIRONMENT) == []
