"""The engine daemon: deploy, from_name, environments, autoscaling (Step 4)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import warren
from support import EngineProcess, hosted_apps, lines, max_overlap, wait_until

app = warren.App("test-engine")


def record(path: str, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(line + "\n")


@app.function()
def triple(x: int) -> int:
    return 3 * x


@app.function(max_containers=2, max_inputs=1)
def timed(x: int, log: str, seconds: float = 0.3) -> int:
    started = time.time()
    time.sleep(seconds)
    record(log, f"{started} {time.time()}")
    return x


@app.function(min_containers=1, max_containers=3, scaledown_window=2)
def warm(x: float) -> float:
    time.sleep(x)
    return x


@app.function(min_containers=0, scaledown_window=1)
async def cold(x: int) -> int:
    return x + 1


bounded = warren.App("test-engine-bounded")


@bounded.function(max_containers=2, max_inputs=1)
def bounded_timed(x: int, log: str) -> int:
    started = time.time()
    time.sleep(0.3)
    record(log, f"{started} {time.time()}")
    return x


@app.function()
async def long_call(log: str, seconds: float) -> str:
    await asyncio.to_thread(record, log, "started")
    await asyncio.sleep(seconds)
    return "done"


env_a = warren.App("demo", environment="test-env-a")
env_b = warren.App("demo", environment="test-env-b")


@env_a.function(name="which")
def which_a() -> str:
    return "a"


@env_b.function(name="which")
def which_b() -> str:
    return "b"


def _in_another_process(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_deployed_function_is_called_by_name_from_another_process_across_engine_restarts(
    engine: EngineProcess,
) -> None:
    app.deploy()
    call = "import warren; print(warren.Function.from_name('test-engine', 'triple').remote(14))"
    assert _in_another_process(call) == "42"
    engine.restart()
    assert _in_another_process(call) == "42"


def test_from_name_of_an_app_not_deployed_raises_not_found_on_first_use(
    engine: EngineProcess,
) -> None:
    handle = warren.Function.from_name("never-deployed", "nothing")  # no error yet: lazy
    with pytest.raises(warren.NotFoundError) as caught:
        handle.remote(1)
    message = str(caught.value)
    assert "never-deployed" in message and "nothing" in message and "'main'" in message


@pytest.mark.engine_environments("test-env-a", "test-env-b")
def test_two_environments_keep_apps_of_the_same_name_apart(engine: EngineProcess) -> None:
    env_a.deploy()
    env_b.deploy()
    assert warren.Function.from_name("demo", "which", environment_name="test-env-a").remote() == "a"
    assert warren.Function.from_name("demo", "which", environment_name="test-env-b").remote() == "b"


def test_max_containers_and_max_inputs_bound_concurrency_and_processes(
    engine: EngineProcess, tmp_path: Path
) -> None:
    bounded.deploy()  # the only app of this engine: its containers are all the engine has
    log = tmp_path / "intervals"
    peak_processes = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak_processes
        while not done.is_set():
            peak_processes = max(peak_processes, len(engine.containers()))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert list(bounded_timed.map(range(10), kwargs={"log": str(log)})) == list(range(10))
    finally:
        done.set()
        watcher.join()
    intervals = [tuple(map(float, line.split())) for line in lines(log)]
    assert len(intervals) == 10
    assert max_overlap(intervals) <= 2  # type: ignore[arg-type]
    assert 1 <= peak_processes <= 2


def test_min_containers_stay_warm_and_extra_containers_scale_down(engine: EngineProcess) -> None:
    app.deploy()
    # one container is up before any call
    assert warm.get_current_stats()["containers"] == 1
    # load brings more, up to max_containers
    assert sorted(warm.map([1.0] * 6, order_outputs=False)) == [1.0] * 6
    # after the load, those above the minimum stop once idle for scaledown_window (2 s)
    assert wait_until(lambda: warm.get_current_stats()["containers"] == 1, 15)


def test_a_function_with_no_container_starts_one_on_the_first_call(engine: EngineProcess) -> None:
    app.deploy()
    assert wait_until(lambda: cold.get_current_stats()["containers"] == 0, 15)
    started = time.monotonic()
    assert cold.remote(1) == 2
    assert time.monotonic() - started < 10
    assert cold.get_current_stats()["containers"] == 1


def test_update_autoscaler_lowers_concurrency_during_a_map_and_persists_until_redeploy(
    engine: EngineProcess, tmp_path: Path
) -> None:
    app.deploy()
    handle = warren.Function.from_name("test-engine", "timed")
    log = tmp_path / "intervals"
    results = iter(handle.map(range(30), kwargs={"log": str(log), "seconds": 0.2}))
    assert next(results) == 0
    handle.update_autoscaler(max_containers=1)
    lowered = time.time()
    assert list(results) == list(range(1, 30))
    later = [
        (start, end)
        for start, end in (tuple(map(float, line.split())) for line in lines(log))
        if start > lowered + 3
    ]
    assert later, "the map should still have been running 3 s after the change"
    assert max_overlap(later) == 1
    # the override survives an engine restart...
    engine.restart()
    assert handle.get_current_stats()["autoscaler"]["max_containers"] == 1
    # ...and a redeploy restores the decorator's value
    app.deploy()
    assert handle.get_current_stats()["autoscaler"]["max_containers"] == 2


def test_update_autoscaler_refuses_invalid_values(engine: EngineProcess) -> None:
    app.deploy()
    handle = warren.Function.from_name("test-engine", "timed")
    with pytest.raises(warren.InvalidError, match="min_containers"):
        handle.update_autoscaler(min_containers=-1)
    with pytest.raises(warren.InvalidError, match="cannot exceed"):
        handle.update_autoscaler(min_containers=5)


def test_sigterm_to_the_engine_during_a_map_loses_no_input(
    engine: EngineProcess, tmp_path: Path
) -> None:
    app.deploy()
    handle = warren.Function.from_name("test-engine", "timed")
    log = tmp_path / "intervals"
    results: list[int] = []

    def consume() -> None:
        results.extend(handle.map(range(40), kwargs={"log": str(log), "seconds": 0.1}))

    mapper = threading.Thread(target=consume)
    mapper.start()
    assert wait_until(lambda: len(lines(log)) >= 5, 30)
    assert engine.stop() == 0  # graceful: containers finish what they run
    time.sleep(1.0)
    engine.start()
    mapper.join(120)
    assert not mapper.is_alive()
    assert results == list(range(40))


async def test_from_name_works_in_async_code_with_an_explicit_client(engine: EngineProcess) -> None:
    await app.deploy.aio()
    async with warren.Client.connect() as client:
        handle = warren.Function.from_name("test-engine", "triple", client=client)
        assert await handle.remote.aio(5) == 15
        assert [x async for x in handle.map.aio(range(3))] == [0, 3, 6]


def test_the_app_command_line_lists_shows_and_stops_deployed_apps(engine: EngineProcess) -> None:
    app.deploy()
    command = str(Path(sys.executable).with_name("warren"))
    listed = subprocess.run([command, "app", "list"], capture_output=True, text=True, timeout=60)
    assert "test-engine" in listed.stdout, listed.stderr
    status = subprocess.run(
        [command, "app", "status", "test-engine", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert '"triple"' in status.stdout and '"queued_inputs"' in status.stdout, status.stderr
    stopped = subprocess.run(
        [command, "app", "stop", "test-engine"], capture_output=True, text=True
    )
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(warren.NotFoundError):
        warren.Function.from_name("test-engine", "triple").remote(1)


def test_an_input_cut_short_by_an_engine_stop_runs_again_after_the_restart(
    engine: EngineProcess, tmp_path: Path
) -> None:
    # Given a call that runs longer than the containers' stop grace (2 s)
    app.deploy()
    log = tmp_path / "executions"
    outcome: list[str] = []
    caller = threading.Thread(target=lambda: outcome.append(long_call.remote(str(log), 5.0)))
    caller.start()
    assert wait_until(lambda: len(lines(log)) == 1, 30)
    # When the engine stops (the input is cut short) and starts again
    assert engine.stop() == 0
    engine.start()
    # Then the input is redelivered and the caller gets its one result
    caller.join(60)
    assert outcome == ["done"]
    assert len(lines(log)) == 2


def test_the_daemon_stops_an_ephemeral_app_whose_client_was_killed(
    engine: EngineProcess, tmp_path: Path
) -> None:
    # Given a script running an app on the daemon, killed with SIGKILL
    script = tmp_path / "abandoned.py"
    script.write_text(
        "import time, warren\n"
        "app = warren.App('abandoned')\n"
        "@app.function()\n"
        "def f(x):\n"
        "    return x\n"
        "with app.run():\n"
        "    print(f.remote('running'), flush=True)\n"
        "    time.sleep(120)\n"
    )
    runner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    assert runner.stdout.readline().strip() == "running"
    assert any(a.app == "abandoned" for a in hosted_apps())
    runner.kill()
    runner.wait()
    runner.stdout.close()
    # Then the daemon notices its lease is gone and stops the app
    assert wait_until(lambda: not any(a.app == "abandoned" for a in hosted_apps()), 45)
