"""Fixtures for tests against the real broker and real engine processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support import stop_all_apps


@pytest.fixture(autouse=True)
def _needs_broker(broker_url: str) -> None:
    """Every integration test runs against the real RabbitMQ."""


class EngineProcess:
    """A real engine daemon process whose state survives restarts (same state dir)."""

    def __init__(self, state_dir: Path, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine", "--state-dir", str(self.state_dir)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.process.stdout.close()
        assert line.startswith(b"READY"), f"engine daemon did not start: {line!r}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def restart(self) -> None:
        assert self.stop() == 0
        self.start()

    def containers(self) -> list[psutil.Process]:
        """Container processes: the children of the engine's fork server."""
        found = []
        for child in psutil.Process(self.pid).children():
            if "forkserver" in " ".join(child.cmdline()):
                found.extend(child.children())
        return found


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineProcess]:
    """A real engine daemon; the apps deployed meanwhile are stopped (queues removed) after.

    Containers get 2 s to finish their inputs when stopped (``WARREN_STOP_GRACE``).
    """
    daemon = EngineProcess(tmp_path / "engine-state", env={"WARREN_STOP_GRACE": "2"})
    daemon.start()
    try:
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            stop_all_apps()
            daemon.stop()


@pytest.fixture
def engine_daemon(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real engine daemon on the shared control queue, stopped after the test."""
    daemon = subprocess.Popen(
        [sys.executable, "-m", "engine", "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert daemon.stdout is not None
    line = daemon.stdout.readline()
    assert line.startswith(b"READY"), f"engine daemon did not start: {line!r}"
    try:
        yield daemon
    finally:
        daemon.terminate()
        daemon.wait(60)
        daemon.stdout.close()
