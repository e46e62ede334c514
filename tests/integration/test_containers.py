"""Inspecting containers (``warren container list|stop``) and stats true at every moment."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
import warren
from support import EngineProcess, forget_environment, lines, wait_until
from warren.wire.control import StopContainer

ENVIRONMENT = f"test-containers-{uuid.uuid4().hex[:8]}"
APP = "test-containers"
WARREN = str(Path(sys.executable).with_name("warren"))
app = warren.App(APP, environment=ENVIRONMENT)


def record(path: str, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


@app.function(max_containers=3)
def sleepy(x: int, seconds: float, log: str) -> int:
    print(f"running {x}")
    time.sleep(seconds)
    record(log, str(x))
    return x


# Fast functions get many inputs per message (a container holds more than it runs);
# slow ones get one per message. Sync and async of each.
@app.function()
def fast_sync(x: int) -> int:
    return x + 1


@app.function(max_inputs=8)
async def fast_async(x: int) -> int:
    return x + 1


@app.function(max_containers=2)
def slow_sync(x: int) -> int:
    time.sleep(0.05)
    return x + 1


@app.function(max_inputs=4, max_containers=2)
async def slow_async(x: int) -> int:
    await asyncio.sleep(0.05)
    return x + 1


@pytest.fixture(scope="module", autouse=True)
def _own_environment() -> Iterator[None]:
    yield
    forget_environment(ENVIRONMENT)


def warren_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [WARREN, *args, "--env", ENVIRONMENT], capture_output=True, text=True, timeout=60
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def listed(function: str | None = None) -> list[dict[str, Any]]:
    """``warren container list --app APP --json``, of one function if given."""
    rows: list[dict[str, Any]] = orjson.loads(
        warren_cli("container", "list", "--app", APP, "--json").stdout
    )
    return [row for row in rows if function in (None, row["function"])]


class Mapping(threading.Thread):
    """A map running in the background, its results kept in order of arrival."""

    def __init__(self, count: int, seconds: float, log: Path) -> None:
        super().__init__()
        self.count, self.seconds, self.log = count, seconds, str(log)
        self.results: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            kwargs = {"seconds": self.seconds, "log": self.log}
            for value in sleepy.map(range(self.count), kwargs=kwargs, order_outputs=False):
                self.results.append(value)
        except BaseException as exc:
            self.error = exc


def three_busy_containers() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def busy() -> bool:
        rows[:] = listed("sleepy")
        return len(rows) == 3 and all(r["state"] == "ready" and r["running_inputs"] for r in rows)

    assert wait_until(busy, 60, interval=0.2), rows
    return rows


def test_container_list_shows_every_container_of_a_busy_pool_with_its_pid_and_log_id(
    engine: EngineProcess, tmp_path: Path
) -> None:
    # Given a pool of at most 3 containers under the load of a map of sleeping inputs
    app.deploy()
    mapping = Mapping(36, 0.5, tmp_path / "ran")
    mapping.start()
    try:
        # When its containers are listed while all three are busy
        rows = three_busy_containers()
        stats = sleepy.get_current_stats()
        everything = listed()
        engine_children = {process.pid for process in engine.containers()}
    finally:
        mapping.join(120)
    assert mapping.error is None and sorted(mapping.results) == list(range(36))
    # Then each row is one of the pool's container processes, a child of the engine,
    # running one input (max_inputs=1), and the app's rows are all the engine's containers
    pids = {row["pid"] for row in rows}
    assert len(pids) == 3 and pids == set(stats["pids"])
    assert {row["pid"] for row in everything} == engine_children
    assert all(row["running_inputs"] == 1 and row["held_inputs"] >= 1 for row in rows)
    assert {row["app"] for row in everything} == {APP}
    assert len({row["node"] for row in everything}) == 1  # one engine node: this one
    assert all(row["uptime"] > 0 for row in rows) and len({row["id"] for row in rows}) == 3
    # And its ids are the ones the function's log lines carry
    logged = [
        orjson.loads(line) for line in warren_cli("app", "logs", APP, "--json").stdout.splitlines()
    ]
    ran_in = {line["container"] for line in logged if line["function"] == "sleepy"}
    assert ran_in == {row["id"] for row in rows}
    # And the table for people shows them too
    table = warren_cli("container", "list").stdout.splitlines()
    assert table[0].split()[:5] == ["ID", "APP", "FUNCTION", "NODE", "PID"]
    assert {row["id"] for row in rows} <= {line.split()[0] for line in table[1:]}


def test_a_stopped_container_is_replaced_and_every_input_still_runs_once(
    engine: EngineProcess, tmp_path: Path
) -> None:
    # Given a map of sleeping inputs keeping three containers busy
    app.deploy()
    ran = tmp_path / "ran"
    mapping = Mapping(60, 0.3, ran)
    mapping.start()
    try:
        victim = three_busy_containers()[0]
        # When one of them is stopped while it runs an input
        stopped = warren_cli("container", "stop", victim["id"])
        assert victim["id"] in stopped.stdout and "stopping" in stopped.stdout
        # Then its process ends, and the pool starts another in its place
        assert wait_until(lambda: not psutil.pid_exists(victim["pid"]), 30)

        def replaced() -> bool:
            rows = listed("sleepy")
            return len(rows) == 3 and victim["id"] not in {row["id"] for row in rows}

        assert wait_until(replaced, 30, interval=0.2)
    finally:
        mapping.join(120)
    # And every input of the map got its one result, having run exactly once: the stopped
    # container finished what it ran and handed back what it had not started
    assert mapping.error is None
    assert sorted(mapping.results) == list(range(60))
    assert Counter(lines(ran)) == Counter(str(x) for x in range(60))


def test_stopping_a_container_that_does_not_exist_is_not_found(engine: EngineProcess) -> None:
    app.deploy()
    done = warren_cli("container", "stop", "0123456789ab", check=False)
    assert done.returncode != 0
    assert "NotFoundError" in done.stderr and "0123456789ab" in done.stderr

    async def ask() -> None:
        async with warren.Client.connect() as client:
            await client.control(StopContainer(ENVIRONMENT, "nope"))

    with pytest.raises(warren.NotFoundError, match="nope"):
        asyncio.run(ask())


@pytest.mark.parametrize(
    ("function", "count"),
    [(fast_sync, 400), (fast_async, 400), (slow_sync, 12), (slow_async, 24)],
    ids=["batched-sync", "batched-async", "unbatched-sync", "unbatched-async"],
)
def test_right_after_a_map_ends_no_input_is_counted_running_held_or_queued(
    engine: EngineProcess, function: warren.Function[..., int], count: int
) -> None:
    app.deploy()
    for _ in range(4):
        # When a map has all its results
        assert list(function.map(range(count))) == [x + 1 for x in range(count)]
        # Then at once the function's stats count nothing running, held or queued
        stats = function.get_current_stats()
        assert (stats["running_inputs"], stats["held_inputs"], stats["queued_inputs"]) == (0, 0, 0)
        assert stats["containers"] >= 1 and stats["inputs_received"] >= count
    # And so does warren app status, right after the next one
    assert list(function.map(range(count))) == [x + 1 for x in range(count)]
    status = orjson.loads(warren_cli("app", "status", APP, "--json").stdout)
    shown = status["functions"][function.tag]
    assert (shown["running_inputs"], shown["held_inputs"], shown["queued_inputs"]) == (0, 0, 0)


def test_listing_the_containers_of_an_app_that_does_not_run_is_not_found(
    engine: EngineProcess,
) -> None:
    done = warren_cli("container", "list", "--app", "no-such-app", check=False)
    assert done.returncode != 0
    assert "NotFoundError" in done.stderr and "no-such-app" in done.stderr
