"""Retries on the engine side, with their backoff, and timeouts that count as failures."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import warren
from faults import record_execution
from support import EngineProcess, lines, stop_all_apps, wait_until

app = warren.App("test-retries")


def _attempt(log: str) -> int:
    """Record this attempt with its time; return how many attempts there were before it."""
    before = len(Path(log).read_text().splitlines()) if Path(log).exists() else 0
    with open(log, "a") as handle:
        handle.write(f"{time.time()}\n")
    return before


@app.function(retries=warren.Retries(max_retries=2, initial_delay=0.5, backoff_coefficient=2.0))
def fails_twice(log: str) -> str:
    if _attempt(log) < 2:
        raise ConnectionResetError("flaky")
    return "third time lucky"


@app.function(retries=2)
def always_fails(log: str) -> str:
    raise KeyError(f"attempt {_attempt(log) + 1}")


@app.function(timeout=1, retries=warren.Retries(1, initial_delay=0.1))
def always_too_slow(log: str) -> None:
    record_execution(log, "slow")
    time.sleep(30)


@app.function(max_inputs=4, retries=warren.Retries(1, initial_delay=0.1))
def fails_once_each(log: str, x: int) -> int:
    if str(x) not in (Path(log).read_text().split() if Path(log).exists() else []):
        with open(log, "a") as handle:
            handle.write(f"{x}\n")
        raise RuntimeError(f"first attempt of {x}")
    return x


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    with app.run():
        yield app


def test_a_function_that_fails_twice_then_succeeds_returns_after_the_backoff(
    tmp_path: Path,
) -> None:
    log = tmp_path / "attempts"
    assert fails_twice.remote(str(log)) == "third time lucky"
    started = [float(t) for t in lines(log)]
    assert len(started) == 3
    # Then the attempts were apart by the backoff: 0.5 s, then 1.0 s
    assert started[1] - started[0] >= 0.5
    assert started[2] - started[1] >= 1.0


def test_a_function_that_always_fails_raises_its_own_exception_after_three_attempts(
    tmp_path: Path,
) -> None:
    log = tmp_path / "attempts"
    with pytest.raises(KeyError, match="attempt 3"):
        always_fails.remote(str(log))
    assert len(lines(log)) == 3


def test_a_timeout_is_retried_and_the_caller_gets_function_timeout_error_at_the_end(
    tmp_path: Path,
) -> None:
    log = tmp_path / "executions"
    started = time.monotonic()
    with pytest.raises(warren.FunctionTimeoutError, match="timeout of 1s"):
        always_too_slow.remote(str(log))
    assert time.monotonic() - started < 25  # two attempts of 1 s, and a new container each
    assert len(lines(log)) == 2
    assert len({line.split()[1] for line in lines(log)}) == 2  # each ran in its own container


def test_a_spawned_call_retries_without_its_caller(tmp_path: Path) -> None:
    log = tmp_path / "attempts"
    call = fails_twice.spawn(str(log))
    time.sleep(2.5)  # nobody waits: the engine retries on its own
    assert len(lines(log)) == 3
    assert call.get(timeout=10) == "third time lucky"


def test_map_retries_each_failed_input_and_keeps_the_order(tmp_path: Path) -> None:
    log = tmp_path / "first-attempts"
    assert list(fails_once_each.map([str(log)] * 20, range(20))) == list(range(20))
    assert sorted(int(x) for x in lines(log)) == list(range(20))


orphan_app = warren.App("test-retries-orphaned")


@orphan_app.function(retries=warren.Retries(1, initial_delay=2.0))
def fails_then_waits(log: str) -> None:
    _attempt(log)
    raise RuntimeError("always")


def test_a_retry_whose_app_stopped_meanwhile_is_answered_not_lost(
    engine: EngineProcess, tmp_path: Path
) -> None:
    # Given a deployed function whose failed input waits 2 s in a delay queue
    orphan_app.deploy()
    log = tmp_path / "attempts"
    call = fails_then_waits.spawn(str(log))
    assert wait_until(lambda: len(lines(log)) == 1, 15)
    # When the app is stopped before the retry comes back
    stop_all_apps()
    # Then the caller gets an answer saying so, instead of waiting forever
    with pytest.raises(warren.ExecutionError, match="was removed before the retry ran"):
        call.get(timeout=30)
    assert len(lines(log)) == 1
