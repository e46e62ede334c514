"""Fixtures for tests against the real broker and real engine processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import support
from cluster import rabbit_cluster as rabbit_cluster
from support import EngineProcess, engine_running


@pytest.fixture(autouse=True)
def _needs_broker(broker_url: str) -> None:
    """Every integration test runs against the real RabbitMQ."""


def _module_environments(module: object) -> list[str]:
    names = ["main"]
    for attribute in ("ENVIRONMENT", "TAIL_ENVIRONMENT"):
        value = getattr(module, attribute, None)
        if isinstance(value, str):
            names.append(value)
    return names


@pytest.fixture(scope="module", autouse=True)
def _engine_environments(request: pytest.FixtureRequest) -> Iterator[None]:
    """The engines a module starts serve main and its ENVIRONMENT (and TAIL_ENVIRONMENT);
    set before its module-scoped fixtures start any (autouse fixtures come first)."""
    support.ENGINE_ENVIRONMENTS[:] = _module_environments(request.module)
    yield
    support.ENGINE_ENVIRONMENTS[:] = ["main"]


@pytest.fixture(autouse=True)
def _marked_environments(request: pytest.FixtureRequest) -> Iterator[None]:
    """...and those a test's ``engine_environments`` marker names."""
    marker = request.node.get_closest_marker("engine_environments")
    if marker is None:
        yield
        return
    names = [*_module_environments(request.module), *marker.args]
    support.ENGINE_ENVIRONMENTS[:] = list(dict.fromkeys(names))
    yield
    support.ENGINE_ENVIRONMENTS[:] = _module_environments(request.module)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineProcess]:
    """A real engine daemon; the apps deployed meanwhile are stopped (queues removed) after.

    Containers get 2 s to finish their inputs when stopped (``WARREN_STOP_GRACE``).
    """
    with engine_running(tmp_path / "engine-state") as daemon:
        yield daemon


@pytest.fixture
def engine_daemon(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real engine daemon on the shared control queue, stopped after the test."""
    daemon = subprocess.Popen(
        [sys.executable, "-P", "-m", "warren_engine", "--state-dir", str(tmp_path / "state")],
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
