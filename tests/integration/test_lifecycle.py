"""Starting and stopping apps: not-found errors, queue clean-up, engines (Step 1, point 6)."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import warren
from support import queue_exists, queue_names
from warren.wire import naming

app = warren.App("test-lifecycle")
never = warren.App("test-never-started")


@app.function()
def double(x: int) -> int:
    return 2 * x


@app.function(max_containers=1, max_inputs=1)
async def slow(x: int) -> int:
    await asyncio.sleep(1.0)
    return x


@never.function()
def orphan(x: int) -> int:
    return x


def test_calling_a_function_of_an_app_never_started_raises_not_found_promptly() -> None:
    started = time.monotonic()
    with pytest.raises(warren.NotFoundError, match=r"test-never-started\.orphan"):
        orphan.remote(1)
    assert time.monotonic() - started < 5


def test_stopping_an_app_removes_its_queues_and_later_calls_raise_not_found() -> None:
    with app.run():
        assert double.remote(21) == 42
        queue = naming.function_queue(app.environment, app.instance_name, "double")
        assert queue_exists(queue)
    assert not queue_exists(queue)
    started = time.monotonic()
    with pytest.raises(warren.NotFoundError):
        double.remote(1)
    assert time.monotonic() - started < 5


async def test_inputs_still_queued_when_the_app_stops_are_answered_with_an_error() -> None:
    # Given one container running one input at a time, and four inputs of a second each
    async with app.run():
        calls = [asyncio.ensure_future(slow.remote.aio(i)) for i in range(4)]
        await asyncio.sleep(0.5)  # the first input is running, the rest are queued
    # When the app stops, Then no caller is left waiting: queued inputs fail promptly
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
    assert outcomes[0] == 0
    errors = [o for o in outcomes if isinstance(o, warren.ExecutionError)]
    assert errors, outcomes
    assert all("app 'test-lifecycle' stopped" in str(e) for e in errors)


def test_an_app_registers_with_a_listening_engine_daemon(
    engine_daemon: subprocess.Popen[bytes],
) -> None:
    with app.run():
        assert app._run is not None and app._run.engine is None  # no child engine started
        assert double.remote(5) == 10
        pids = double.get_current_stats()["pids"]
        assert pids
        daemon_family = {p.pid for p in psutil.Process(engine_daemon.pid).children(recursive=True)}
        assert set(pids) <= daemon_family
    assert engine_daemon.poll() is None  # the daemon outlives the app


def test_code_pickled_by_another_python_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("warren.wire.code_bundle.python_version", lambda: "3.99")
    with pytest.raises(warren.VersionMismatchError, match=r"3\.99"), app.run():
        pass


def test_an_app_whose_code_cannot_load_in_a_container_fails_to_start_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a function that uses a module only this process can import
    (tmp_path / "only_here_helpers.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    helpers = importlib.import_module("only_here_helpers")
    broken = warren.App("test-cannot-load")

    @broken.function()
    def uses_helper(x: int) -> int:
        return int(helpers.triple(x))

    # When the app starts, Then it fails at once, naming the container's import error
    started = time.monotonic()
    with (
        pytest.raises(warren.EngineError, match="No module named 'only_here_helpers'"),
        broken.run(),
    ):
        pass
    assert time.monotonic() - started < 60
    # And it leaves no queue behind
    assert not any(".fn.test-cannot-load-run-" in name for name in queue_names())
