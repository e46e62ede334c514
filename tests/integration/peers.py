"""Several engine nodes, peers of one environment, for the tests of the cluster."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import psutil
from support import EngineProcess, delete_queues, forget_environment, wait_until
from warren.client.connection import Client
from warren.wire import naming
from warren.wire.control import AppStatus, GetAppStatus, ListApps, ListNodes, Request, StopApp

R = TypeVar("R")


def new_environment() -> str:
    return f"test-peers-{uuid.uuid4().hex[:8]}"


def node(root: Path, environment: str, name: str) -> EngineProcess:
    """An engine node serving ``environment`` only, named ``name``, its state under root."""
    return EngineProcess(
        root / name,
        {"WARREN_ENGINE_ENVIRONMENTS": environment, "WARREN_STOP_GRACE": "2"},
        log=root / f"{name}.log",
        args=("--env", environment, "--node-name", name),
    )


def alive(daemon: EngineProcess) -> bool:
    return daemon.process is not None and daemon.process.poll() is None


def ask(environment: str, request: Request[R], queue: str | None = None) -> R:
    """One control request, from a client of ``environment``, answered by any of its nodes
    (or by the node whose own queue is ``queue``)."""

    async def send() -> R:
        async with Client.connect(environment=environment) as client:
            return await client.control(request, queue=queue)

    return asyncio.run(send())


def app_status(environment: str, name: str) -> AppStatus:
    return ask(environment, GetAppStatus(environment, name))


def leader(environment: str, app: str, other_than: str | None = None) -> str:
    """The node that leads ``environment`` as ``app``'s status names it, once one does
    (and it is not ``other_than``)."""
    named: list[str | None] = [None]

    def known() -> bool:
        named[0] = app_status(environment, app).leader
        return named[0] not in (None, other_than)

    assert wait_until(known, 15), f"no leader (other than {other_than}): {named[0]}"
    assert named[0] is not None
    return named[0]


def node_names(environment: str, asked: str) -> set[str]:
    """The nodes up, as node ``asked`` sees them."""
    listing = ask(environment, ListNodes(environment), queue=naming.node_queue(asked))
    return {info.name for info in listing.nodes if info.alive}


def app_names(environment: str) -> set[str]:
    listing = ask(environment, ListApps(environment))
    return {app.app for app in listing.apps}


def container_pids(daemons: dict[str, EngineProcess]) -> dict[str, set[int]]:
    """Each live node's container pids, by its node name."""
    pids: dict[str, set[int]] = {}
    for name, daemon in daemons.items():
        if alive(daemon):
            with contextlib.suppress(psutil.NoSuchProcess):
                pids[name] = {proc.pid for proc in daemon.containers()}
    return pids


def family(daemon: EngineProcess) -> list[psutil.Process]:
    """An engine's fork server and containers (which outlive it only if a bug keeps them)."""
    return psutil.Process(daemon.pid).children(recursive=True)


def gone(processes: list[psutil.Process]) -> bool:
    return not [proc for proc in processes if proc.is_running() and proc.status() != "zombie"]


@contextlib.contextmanager
def peers(root: Path, environment: str, names: list[str]) -> Iterator[dict[str, EngineProcess]]:
    """A node of ``environment`` for each name, all knowing each other; after, the apps of
    the environment are stopped, the nodes left are stopped and the environment's queues
    and exchanges are removed."""
    daemons = {name: node(root, environment, name) for name in names}
    try:
        for daemon in daemons.values():
            daemon.start()
        assert wait_until(
            lambda: all(node_names(environment, n) >= set(names) for n in names), 15
        ), "nodes never met"
        yield daemons
    finally:
        stop_nodes(environment, list(daemons.values()))


def stop_nodes(environment: str, daemons: list[EngineProcess]) -> None:
    """Stop the environment's apps (through a node still up), then the nodes, then forget
    the environment."""
    try:
        if any(alive(daemon) for daemon in daemons):
            for name in app_names(environment):
                ask(environment, StopApp(environment, name))
    finally:
        for daemon in daemons:
            if alive(daemon):
                with contextlib.suppress(Exception):
                    daemon.stop(signal.SIGTERM)
        forget_peers_environment(environment)


def forget_peers_environment(environment: str) -> None:
    """:func:`support.forget_environment`, and every queue of the environment that nobody
    consumes any more: its slots queues, say, and the result queues of the clients the
    helpers here open for each request (a client of the test's process that is still
    connected keeps its own; it expires by itself)."""
    forget_environment(environment)
    prefix = f"warren.v1.{environment}."
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "consumers", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    left = [
        name
        for name, consumers in (line.split() for line in listed.stdout.splitlines() if line.strip())
        if name.startswith(prefix) and consumers == "0"
    ]
    delete_queues(left)
