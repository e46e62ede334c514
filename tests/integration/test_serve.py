"""``warren serve``: an app that reloads its code when its files change, keeping its URLs."""

from __future__ import annotations

import asyncio
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import aiohttp
import pytest
import warren
from support import REPO, forget_environment
from warren.wire.control import ListApps

ENVIRONMENT = f"test-serve-{uuid.uuid4().hex[:8]}"
WARREN = str(Path(sys.executable).with_name("warren"))

SCRIPT = textwrap.dedent(
    """
    import warren

    from greeting import WORD

    app = warren.App("served")

    @app.function()
    @warren.web_endpoint()
    def hello(name: str = "world") -> str:
        print(f"serving {{name}}")
        return f"{{WORD}} {{name}} {version}"
    """
)


@pytest.fixture(scope="module", autouse=True)
def _own_environment() -> Iterator[None]:
    yield
    forget_environment(ENVIRONMENT)


class Lines:
    """The lines a stream gives, as they come (read on a thread)."""

    def __init__(self, stream: IO[str]) -> None:
        self.arrived: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.arrived.put(line.rstrip("\n"))

    def wait_for(self, needle: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.arrived.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r} in {timeout}s; saw: {self.seen}")


def get(url: str) -> tuple[int, object]:
    async def fetch() -> tuple[int, object]:
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            return reply.status, await reply.json()

    return asyncio.run(fetch())


def answer_within(url: str, expected: str, seconds: float) -> float:
    """How long until ``url`` answers ``expected`` (fails after ``seconds``)."""
    began = time.monotonic()
    answer: object = None
    while time.monotonic() - began < seconds:
        status, answer = get(url)
        if status == 200 and answer == expected:
            return time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError(f"{url} still answers {answer!r} after {seconds}s, not {expected!r}")


def test_serve_reloads_an_edited_function_within_3s_and_keeps_its_url(tmp_path: Path) -> None:
    # Given an app served from a script that imports a module beside it
    script = tmp_path / "served.py"
    script.write_text(SCRIPT.format(version="v1"))
    (tmp_path / "greeting.py").write_text('WORD = "hello"\n')
    server = subprocess.Popen(
        [WARREN, "serve", str(script), "--env", ENVIRONMENT],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert server.stdout is not None and server.stderr is not None
    said, printed = Lines(server.stderr), Lines(server.stdout)
    try:
        said.wait_for("serving served")
        url = said.wait_for("/hello").strip()
        assert get(url + "?name=ada") == (200, "hello ada v1")
        # And what the function prints reaches the server's stdout
        assert "hello: serving ada" in printed.wait_for("serving ada")
        # When the function is edited, Then the same URL answers with the new code within 3 s
        script.write_text(SCRIPT.format(version="v2"))
        assert answer_within(url + "?name=ada", "hello ada v2", 3.0) < 3.0
        said.wait_for("reloaded served after a change to served.py")
        # And a change to a module it imports is picked up too
        (tmp_path / "greeting.py").write_text('WORD = "bonjour"\n')
        answer_within(url + "?name=ada", "bonjour ada v2", 3.0)
        # And a script that no longer imports is reported while the last code keeps serving
        script.write_text("this is not python\n")
        said.wait_for("not reloaded")
        assert get(url + "?name=ada") == (200, "bonjour ada v2")
        script.write_text(SCRIPT.format(version="v3"))
        answer_within(url + "?name=ada", "bonjour ada v3", 3.0)
        # And no other URL was ever shown
        urls = [line.strip() for line in said.seen if "://" in line]
        assert set(urls) == {url}
        # When the server is interrupted, Then it stops the app and exits
        server.send_signal(signal.SIGINT)
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()
        server.stderr.close()
    # And the app is gone from the engine
    assert not [app for app in _apps() if app.startswith("served-run-")]


def _apps() -> list[str]:
    async def listing() -> list[str]:
        async with warren.Client.connect() as client:
            try:
                reply = await client.control(ListApps(ENVIRONMENT))
            except warren.EngineNotFoundError:
                return []  # the server's own engine stopped with it
            return [app.instance for app in reply.apps]

    return asyncio.run(listing())


def test_serve_names_a_missing_script(tmp_path: Path) -> None:
    done = subprocess.run(
        [WARREN, "serve", str(tmp_path / "nope.py")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "no such file" in done.stderr
