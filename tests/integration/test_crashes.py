"""Containers that die mid-call: redelivery, the crash limit and the dead-letter queue."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import warren
from faults import Checker, dead_letters, record_execution
from support import lines, running_in_own_environment, wait_until
from warren.wire import topology

ENVIRONMENT = f"test-crash-{uuid.uuid4().hex[:8]}"
app = warren.App("test-crashes", environment=ENVIRONMENT)


@app.function()
def slow_once(log: str, call_id: str) -> str:
    first = not Path(log).exists()
    record_execution(log, call_id)
    if first:
        time.sleep(60)  # the test kills this container meanwhile
    return f"done {call_id}"


@app.function(max_inputs=8)
def kills_itself_on_poison(log: str, x: int) -> int:
    record_execution(log, x)
    if x == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.2)
    return x * 10


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    with running_in_own_environment(app, ENVIRONMENT):
        yield app


def test_a_container_killed_mid_call_has_its_input_run_again_and_one_result(
    tmp_path: Path,
) -> None:
    # Given a call running in a container
    log = tmp_path / "executions"
    checker = Checker(log)
    call = slow_once.spawn(str(log), "call-1")
    assert wait_until(lambda: len(lines(log)) == 1, 30)
    (first_pid,) = checker.pids("call-1")
    # When that container is killed with SIGKILL
    os.kill(first_pid, signal.SIGKILL)
    # Then the call completes once, after a second execution in another container
    checker.outcome("call-1") if call.get(timeout=60) == "done call-1" else None
    checker.check(["call-1"])
    assert checker.executions()["call-1"] == 2
    (second_pid,) = [pid for pid in checker.pids("call-1") if pid != first_pid]
    assert second_pid != first_pid


def test_an_input_that_kills_its_container_every_time_is_dead_lettered_and_the_rest_succeed(
    tmp_path: Path,
) -> None:
    log = tmp_path / "executions"
    limit = int(os.environ.get("WARREN_CRASH_LIMIT", "3"))
    # Given a map whose input 3 kills its container (and shares a message with input 2)
    results = list(kills_itself_on_poison.map([str(log)] * 4, range(4), return_exceptions=True))
    # Then the three unrelated inputs succeed, and the poison one fails with a clear error
    assert results[:3] == [0, 10, 20]
    assert isinstance(results[3], warren.DeadLetteredError)
    assert f"crash limit, WARREN_CRASH_LIMIT, is {limit}" in str(results[3])
    executions = Checker(log).executions()
    assert executions["3"] == limit  # it ran, and killed a container, exactly limit times
    assert len(set(Checker(log).pids("3"))) == limit  # a new container each time
    # And it waits in the dead-letter queue with the reason
    dead = dead_letters(ENVIRONMENT)
    assert len(dead) == 1
    assert "crash limit" in dead[0]["headers"][topology.REASON_HEADER]
