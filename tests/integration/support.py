"""Helpers for tests against the real broker and real engine processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import psutil
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity
from warren.config import settings
from warren.wire import broker_urls
from warren.wire.control import AppStatus, ListApps, StopApp

REPO = Path(__file__).resolve().parents[2]


async def connect_broker() -> aio_pika.abc.AbstractConnection:
    """A plain aio-pika connection to the first node of ``WARREN_BROKER_URL`` that answers
    (it may list several nodes of a cluster)."""
    return await broker_urls.connect(settings().broker_url)


def queue_exists(name: str) -> bool:
    async def probe() -> bool:
        connection = await connect_broker()
        try:
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
            except ChannelNotFoundEntity:
                return False
            return True
        finally:
            await connection.close()

    return asyncio.run(probe())


def queue_depth(name: str) -> int:
    """Messages ready in a queue (the broker's count)."""

    async def probe() -> int:
        connection = await connect_broker()
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            return queue.declaration_result.message_count or 0
        finally:
            await connection.close()

    return asyncio.run(probe())


def lines(path: Path) -> list[str]:
    """Lines appended so far by functions recording their executions."""
    return path.read_text().splitlines() if path.exists() else []


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def processes_matching(*needles: str) -> list[psutil.Process]:
    """Live processes whose command line contains every needle."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.info["status"] != psutil.STATUS_ZOMBIE and all(n in cmdline for n in needles):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def run_python(
    *args: str, timeout: float = 90, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        **kwargs,  # type: ignore[call-overload]
    )


def stop_all_apps() -> None:
    """Stop every app the daemon hosts, in every environment (their queues go)."""
    from warren.client.connection import Client

    async def stop() -> None:
        async with Client.connect() as client:
            listed = await client.control(ListApps())
            for app in listed.apps:
                await client.control(StopApp(app.environment, app.instance))

    asyncio.run(stop())


def hosted_apps() -> list[AppStatus]:
    """What the engine daemon hosts now, every environment."""
    from warren.client.connection import Client

    async def listing() -> list[AppStatus]:
        async with Client.connect() as client:
            return list((await client.control(ListApps())).apps)

    return asyncio.run(listing())


def queue_names() -> list[str]:
    """Every queue on the broker (from rabbitmqctl, which the tests' machine has)."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "-q"], capture_output=True, text=True, check=True
    )
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


# The environments the engines a test starts serve (``warren engine --env``), unless it
# says otherwise: set for each test by conftest from its module's ENVIRONMENT.
ENGINE_ENVIRONMENTS: list[str] = ["main"]


class EngineProcess:
    """A real engine daemon process whose state survives restarts (same state dir)."""

    def __init__(
        self,
        state_dir: Path,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        args: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.state_dir = state_dir
        self.args = args
        self.prefix = prefix  # what the engine runs under (``ip netns exec NS``, say)
        self.env = {
            **os.environ,
            "WARREN_ENGINE_ENVIRONMENTS": ",".join(ENGINE_ENVIRONMENTS),
            **(env or {}),
        }
        self.log = log  # where its stderr (and its containers') goes, if not to the test's
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        stderr = open(self.log, "ab") if self.log is not None else None  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-P",
                "-m",
                "warren_engine",
                "--state-dir",
                str(self.state_dir),
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            stderr=stderr,
            env=self.env,
        )
        if stderr is not None:
            stderr.close()  # the engine has its own copy
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


@contextlib.contextmanager
def engine_running(
    state_dir: Path,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[EngineProcess]:
    """A real engine daemon for the block; the apps it hosts are stopped (queues removed)
    after. Containers get 2 s to finish their inputs when stopped (``WARREN_STOP_GRACE``)."""
    daemon = EngineProcess(state_dir, {"WARREN_STOP_GRACE": "2", **(env or {})}, log, args)
    forget_registries(daemon.env["WARREN_ENGINE_ENVIRONMENTS"].split(","))
    daemon.start()
    try:
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            try:
                stop_all_apps()
            finally:  # a daemon left running would take the next test's control queue
                daemon.stop()


def delete_queues(names: list[str]) -> None:
    """Delete these queues (each on a channel of its own: one missing closes nothing)."""

    async def delete() -> None:
        connection = await connect_broker()
        try:
            for name in names:
                async with connection.channel() as channel:
                    await channel.queue_delete(name)
        finally:
            await connection.close()

    if names:
        asyncio.run(delete())


def forget_registries(environments: list[str]) -> None:
    """Start from no deployed app: each test's engines read registries of their own, as
    each had a state directory of its own before the registry moved to the broker."""
    from warren.wire import naming

    delete_queues(
        [
            queue
            for environment in environments
            for queue in (naming.registry_stream(environment), naming.leader_queue(environment))
        ]
    )


def forget_environment(environment: str) -> None:
    """Remove what a test's own environment leaves on the broker for good: its dead-letter,
    orphans, log stream, registry and leader queues and its exchanges (result and call
    queues expire by themselves)."""
    from warren.wire import naming

    delete_queues(
        [
            naming.dead_letter_queue(environment),
            naming.orphans(environment),
            naming.log_stream(environment),
            naming.registry_stream(environment),
            naming.leader_queue(environment),
        ]
    )

    async def remove() -> None:
        connection = await connect_broker()
        try:
            for exchange in (
                naming.orphans(environment),
                naming.requeue_exchange(environment),
                naming.delay_exchange(environment),
                naming.cancel_exchange(environment),
                naming.log_stream(environment),
            ):
                with contextlib.suppress(ChannelNotFoundEntity):
                    async with connection.channel() as channel:
                        await channel.exchange_delete(exchange)
        finally:
            await connection.close()

    asyncio.run(remove())


@contextlib.contextmanager
def running_in_own_environment(app: Any, environment: str) -> Iterator[Any]:
    """``app.run()`` in a test's own environment, which is forgotten afterwards."""
    try:
        with app.run():
            yield app
    finally:
        forget_environment(environment)


def settings_afresh(patch: pytest.MonkeyPatch) -> None:
    """Make what a test sets in the environment (WARREN_BROKER_URL, WARREN_QUEUE_TYPE)
    reach this process's clients: no settings an earlier test installed (a CLI command
    does), and a new client for each loop (one opened before keeps its settings; it is
    left to the end of the process)."""
    from warren import config
    from warren.client import connection

    patch.setattr(config, "_installed", None)
    patch.setattr(connection, "_by_loop", {})
