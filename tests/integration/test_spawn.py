"""spawn and FunctionCall: results that outlive their caller (Step 3)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
import warren
from support import queue_exists, wait_until
from warren.wire import naming

app = warren.App("test-spawn")


@app.function()
def times_ten(x: float) -> float:
    time.sleep(x)
    return x * 10


@app.function()
def fails(x: int) -> int:
    raise ValueError(f"spawned failure {x}")


@app.function(max_containers=1)
def guarded(seconds: float, marker: str | None) -> float:
    if marker:
        Path(marker).touch()
    time.sleep(seconds)
    return seconds


@app.function()
def sleeper(marker: str, seconds: float) -> int:
    Path(marker + ".started").touch()
    time.sleep(seconds)
    Path(marker + ".finished").touch()
    return os.getpid()


@app.function()
async def async_sleeper(marker: str, seconds: float) -> int:
    await asyncio.to_thread(Path(marker + ".started").touch)
    await asyncio.sleep(seconds)
    await asyncio.to_thread(Path(marker + ".finished").touch)
    return os.getpid()


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    with app.run():
        yield app


def test_spawn_then_get_returns_the_result_and_get_with_timeout_zero_only_looks() -> None:
    call = times_ten.spawn(1.0)
    with pytest.raises(TimeoutError):
        call.get(timeout=0)
    assert call.get() == 10.0
    assert call.get(timeout=0) == 10.0  # fetchable more than once
    with pytest.raises(TimeoutError):
        times_ten.spawn(5.0).get(timeout=0.5)


def test_a_spawned_calls_exception_is_raised_by_get() -> None:
    with pytest.raises(ValueError, match="spawned failure 3") as caught:
        fails.spawn(3).get()
    assert any('raise ValueError(f"spawned failure {x}")' in n for n in caught.value.__notes__)


def test_a_call_is_fetched_in_another_process_after_its_spawner_was_killed(tmp_path: Path) -> None:
    # Given a process that spawns a call and is then killed with SIGKILL
    handle = tmp_path / "function.pickle"
    handle.write_bytes(cloudpickle.dumps(times_ten))  # a reference to the running function
    spawner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import pickle, time
            f = pickle.loads(open({str(handle)!r}, "rb").read())
            print(f.spawn(1.5).object_id, flush=True)
            time.sleep(120)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert spawner.stdout is not None
    object_id = spawner.stdout.readline().strip()
    spawner.send_signal(signal.SIGKILL)
    assert spawner.wait(10) == -signal.SIGKILL
    spawner.stdout.close()
    # When another process fetches it by id, Then it gets the result
    fetch = "import sys, warren; print(warren.FunctionCall.from_id(sys.argv[1]).get())"
    fetcher = subprocess.run(
        [sys.executable, "-c", fetch, object_id], capture_output=True, text=True, timeout=60
    )
    assert fetcher.returncode == 0, fetcher.stderr
    assert fetcher.stdout.strip() == "15.0"


def test_cancelling_a_queued_call_means_it_never_runs(tmp_path: Path) -> None:
    # Given the only container busy for 2 s, and a call queued behind it
    blocker = guarded.spawn(2.0, None)
    marker = tmp_path / "ran"
    queued = guarded.spawn(0.0, str(marker))
    # When the queued call is cancelled
    queued.cancel()
    # Then it never executes, and get says it was cancelled
    assert blocker.get(timeout=30) == 2.0
    assert guarded.remote(0.0, None) == 0.0  # the queue has moved past it
    assert not marker.exists()
    with pytest.raises(warren.CallCancelledError):
        queued.get(timeout=10)


@pytest.mark.parametrize("function", [sleeper, async_sleeper], ids=["sync", "async"])
def test_cancelling_a_running_call_stops_it(tmp_path: Path, function: warren.Function) -> None:  # type: ignore[type-arg]
    marker = str(tmp_path / "call")
    call = function.spawn(marker, 30.0)
    assert wait_until(lambda: Path(marker + ".started").exists(), 30)
    pids_before = set(function.get_current_stats()["pids"])
    started = time.monotonic()
    call.cancel()
    with pytest.raises(warren.CallCancelledError):
        call.get(timeout=30)
    assert time.monotonic() - started < 10
    # The function is free again: a new call runs and returns promptly.
    quick_pid = function.remote(str(tmp_path / "quick"), 0.0)
    if function is sleeper:  # a thread cannot be stopped: its container was replaced
        assert quick_pid not in pids_before
    time.sleep(1.0)
    assert not Path(marker + ".finished").exists()


def test_gather_returns_results_in_argument_order() -> None:
    calls = [times_ten.spawn(i / 1000) for i in range(100)]
    assert warren.FunctionCall.gather(*calls) == [(i / 1000) * 10 for i in range(100)]


async def test_spawn_get_and_gather_have_aio_twins() -> None:
    calls = [await times_ten.spawn.aio(0.01 * i) for i in range(5)]
    assert await calls[2].get.aio() == pytest.approx(0.2)
    assert await warren.FunctionCall.gather.aio(*calls) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError):
        await warren.FunctionCall.gather.aio(calls[0], await fails.spawn.aio(1))


def test_after_the_retention_period_get_raises_expired_and_nothing_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given results kept for 2 s (a client takes its settings when it connects)
    monkeypatch.setenv("WARREN_RESULT_RETENTION", "2")

    async def spawn() -> warren.FunctionCall[float]:
        async with warren.Client.connect():
            return await times_ten.spawn.aio(0.0)

    call = asyncio.run(spawn())
    assert call.get() == 0.0
    queue = naming.call_queue(app.environment, call.object_id.split(".")[2])
    assert queue_exists(queue)
    # When the retention has passed, Then get raises the expired error
    time.sleep(2.5)
    with pytest.raises(warren.ResultExpiredError, match="kept for 2s"):
        call.get()
    # And the broker holds no queue (nor message) for that call any more
    assert not queue_exists(queue)


def test_an_unknown_or_malformed_id_is_refused_clearly() -> None:
    with pytest.raises(warren.InvalidError):
        warren.FunctionCall.from_id("not-an-id")
    ghost = warren.FunctionCall.from_id(f"fc.main.{'0' * 32}.{int(time.time())}.3600")
    with pytest.raises(warren.ResultExpiredError):
        ghost.get(timeout=1)
