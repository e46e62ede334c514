"""What functions print, through the log stream: ``warren app logs``, and ``app.run()``'s caller."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import resource
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import psutil
import pytest
import warren
import warren.config
from support import EngineProcess, forget_environment
from warren_engine.container.log_shipper import BURST_SECONDS

ENVIRONMENT = f"test-output-{uuid.uuid4().hex[:8]}"
APP = "test-output"
WARREN = str(Path(sys.executable).with_name("warren"))
app = warren.App(APP, environment=ENVIRONMENT)


@app.function()
def chatty(token: str) -> str:
    print(f"printed {token}")
    logging.info("logged %s", token)
    return token


@app.function()
def ticker(token: str, lines: int, pause: float) -> int:
    for number in range(lines):
        print(f"{token} tick {number}", flush=True)
        time.sleep(pause)
    print(f"{token} to stderr", file=sys.stderr)
    return lines


@app.function(timeout=120)
def flood(mebibytes: int) -> int:
    """Print ``mebibytes`` MiB in 1 KiB lines; the container's peak memory, in KiB."""
    line = "x" * 1023
    for _ in range(mebibytes * 1024):
        print(line)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.fixture(scope="module", autouse=True)
def _own_environment() -> Iterator[None]:
    yield
    forget_environment(ENVIRONMENT)


def app_logs(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [WARREN, "app", "logs", APP, "--env", ENVIRONMENT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def call_id(call: warren.FunctionCall[object]) -> str:
    return call.object_id.split(".")[2]


class Lines:
    """Each line a stream gives, with when it came, as it comes (read on a thread)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.arrived: queue.Queue[tuple[float, str]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.stream:
            self.arrived.put((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, needle: str, timeout: float) -> float:
        """When the first line with ``needle`` came (lines before it are passed over)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                when, line = self.arrived.get(timeout=left)
            except queue.Empty:
                break
            if needle in line:
                return when
        raise AssertionError(f"no line with {needle!r} within {timeout} s")

    def close(self) -> None:
        """Once the process is gone: the stream's end read, then the stream closed."""
        self.reader.join(10)
        self.stream.close()


def test_app_logs_shows_prints_and_logging_with_function_and_call_and_follows(
    engine: EngineProcess,
) -> None:
    # Given a deployed function that prints one token and logs another
    app.deploy()
    remote = warren.Function.from_name(APP, "chatty", environment_name=ENVIRONMENT)
    first = uuid.uuid4().hex
    call = remote.spawn(first)
    assert call.get(timeout=60) == first
    # When `warren app logs` reads the app's stream, Then both lines are there within 5 s,
    # with the function's name and the call's id
    deadline = time.monotonic() + 5
    out = app_logs()
    while f"printed {first}" not in out and time.monotonic() < deadline:
        out = app_logs()
    printed = next(line for line in out.splitlines() if f"printed {first}" in line)
    logged = next(line for line in out.splitlines() if f"logged {first}" in line)
    for line in (printed, logged):
        assert f" chatty {call_id(call)}:0 " in line
    assert "INFO" in logged
    # And --follow shows a line printed after it started
    follower = subprocess.Popen(
        [WARREN, "app", "logs", APP, "--env", ENVIRONMENT, "--follow"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    followed = Lines(follower.stdout)
    try:
        followed.wait_for(f"printed {first}", 10)  # it reads, and has caught up
        later = uuid.uuid4().hex
        remote.spawn(later).get(timeout=60)
        followed.wait_for(f"printed {later}", 10)
    finally:
        follower.terminate()
        follower.wait(10)
        followed.close()
    # And --since leaves older lines out
    time.sleep(3)
    recent = uuid.uuid4().hex
    remote.spawn(recent).get(timeout=60)
    time.sleep(0.5)  # the container publishes every tenth of a second
    out = app_logs("--since", "2s")
    assert f"printed {recent}" in out
    assert f"printed {first}" not in out and f"printed {later}" not in out


def test_a_flood_of_output_is_dropped_and_counted_and_memory_stays_bounded(
    engine: EngineProcess,
) -> None:
    # Given a deployed function that prints 200 MiB
    app.deploy()
    remote = warren.Function.from_name(APP, "flood", environment_name=ENVIRONMENT)
    remote.remote(0)  # its container is up: the engine's memory is measured from here
    daemon = psutil.Process(engine.pid)
    before = daemon.memory_info().rss
    peak = [before]
    measuring = threading.Event()

    def sample() -> None:
        while not measuring.wait(0.05):
            peak.append(daemon.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # When it is called, Then the caller gets its result
    began = time.monotonic()
    try:
        peak_kib = remote.remote(200)
    finally:
        took = time.monotonic() - began
        measuring.set()
        sampler.join()
    # And the container's memory stayed far below what it printed, and so did the engine's
    assert peak_kib < 150 * 1024
    assert max(peak) - before < 64 * 1024**2
    # And the logs say how many lines were dropped
    time.sleep(0.5)
    out = app_logs("--function", "flood")
    dropped = [line for line in out.splitlines() if "lines dropped" in line]
    assert dropped
    counts = [int(line.split("[warren] ")[1].split()[0]) for line in dropped]
    assert sum(counts) > 100_000
    shipped = sum(1 for line in out.splitlines() if line.endswith("x" * 1023))
    assert shipped + sum(counts) == 200 * 1024
    # And what reached the log storage is what the rate allows, not what was printed
    rate = warren.config.settings().log_rate
    assert shipped * 1024 <= rate * (took + BURST_SECONDS) + 64 * 1024


def test_call_logs_follows_a_running_call_and_ends_when_it_has_finished() -> None:
    # Given a spawned call that prints a line every half second for two seconds
    token = uuid.uuid4().hex
    with app.run(show_output=False):
        call = ticker.spawn(token, 4, 0.5)
        # When its logs are iterated from the start
        seen: list[tuple[float, warren.OutputLine]] = []
        for line in call.logs():
            seen.append((time.monotonic(), line))
        # Then every line is there, in order, on its stream, with its function
        texts = [line.text for _, line in seen]
        assert texts == [f"{token} tick {n}" for n in range(4)] + [f"{token} to stderr"]
        assert [line.stream for _, line in seen] == ["stdout"] * 4 + ["stderr"]
        assert {(line.function, line.index) for _, line in seen} == {("ticker", 0)}
        # And they came while the call ran, not all at its end
        assert seen[-1][0] - seen[0][0] > 1.0
        # And the iterator ended once the call had finished
        assert call.get(timeout=0) == 4

        # And a finished call's lines can be read again, by .aio too
        async def read() -> list[str]:
            return [line.text async for line in call.logs.aio()]

        assert asyncio.run(read()) == texts


async def test_a_runs_output_resumes_after_a_lost_connection_without_repeating_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a run whose caller has shown a function's line
    token = uuid.uuid4().hex
    async with app.run():
        await chatty.remote.aio(f"before-{token}")
        await asyncio.sleep(0.5)
        # When the caller's connection is lost (it reconnects by itself)
        client = await warren.Client.current()
        lost = client.session.connection
        lost._transport.abort()
        # Then a line printed afterwards still reaches it
        await chatty.remote.aio(f"after-{token}")
        assert client.session.connection is not lost
        await asyncio.sleep(0.5)
    out = capsys.readouterr().out
    assert out.count(f"chatty: printed after-{token}") == 1
    # And the line shown before is not shown again by the resumed consumer
    assert out.count(f"chatty: printed before-{token}") == 1


SCRIPT = textwrap.dedent(
    """
    import sys
    import time
    import warren

    app = warren.App("test-output-script", environment={environment!r})

    @app.function()
    def slow_talker():
        print("first line")
        print("to stderr", file=sys.stderr)
        time.sleep(2)
        print("second line")
        return "done"

    @app.local_entrypoint()
    def main():
        print("result", slow_talker.remote())

    if __name__ == "__main__":
        with app.run():
            main()
    """
)


def _without_unbuffered() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}


def test_a_scripts_caller_sees_each_line_as_printed_on_its_own_stream(tmp_path: Path) -> None:
    # Given a script whose function prints a line, sleeps 2 s, prints another
    script = tmp_path / "talker.py"
    script.write_text(SCRIPT.format(environment=ENVIRONMENT))
    # When it runs with pipes for stdout and stderr (block-buffered, no PYTHONUNBUFFERED)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=_without_unbuffered(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = Lines(proc.stdout), Lines(proc.stderr)
    try:
        # Then the first line reaches its stdout before the second is printed
        first = stdout.wait_for("slow_talker: first line", 60)
        second = stdout.wait_for("slow_talker: second line", 10)
        assert second - first > 1.5
        # And the line written to stderr arrives on stderr
        stderr.wait_for("slow_talker: to stderr", 10)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        proc.wait()
        stdout.close()
        stderr.close()


def test_warren_run_quiet_prints_none_of_the_functions_output(tmp_path: Path) -> None:
    script = tmp_path / "talker.py"
    script.write_text(SCRIPT.format(environment=ENVIRONMENT))
    done = subprocess.run(
        [WARREN, "run", "--quiet", str(script)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env=_without_unbuffered(),
    )
    assert done.returncode == 0, done.stderr
    assert "result done" in done.stdout
    assert "first line" not in done.stdout and "second line" not in done.stdout
    assert "to stderr" not in done.stderr
