"""Engine nodes as peers: several ``warren engine --env E`` processes serving one
environment share its work, its bounds and its registry, and survive each other."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import psutil
import pytest
import warren
from peers import (
    app_names,
    app_status,
    ask,
    container_pids,
    family,
    forget_peers_environment,
    gone,
    leader,
    new_environment,
    node,
    peers,
    stop_nodes,
)
from support import EngineProcess, wait_until
from warren.wire import naming
from warren.wire.control import GetAppStatus

MAP_INPUTS = 20_000
KILL_AFTER = 3_000  # results in before a node is killed: the map is well under way


def timed_nap(x: int) -> tuple[int, float, float]:
    started = time.time()
    time.sleep(0.2)
    return os.getpid(), started, time.time()


def double(x: int) -> int:
    return 2 * x


def whose(x: int) -> tuple[int, int]:
    return x, os.getpid()


def most_containers_at_once(runs: list[tuple[int, float, float]]) -> int:
    """Most distinct containers (pids) running an input at one instant; an input that
    ends at the instant another starts is not counted with it."""
    starts = [(start, 1, who) for who, start, _ in runs]
    ends = [(end, -1, who) for who, _, end in runs]
    running: dict[int, int] = {}
    peak = 0
    for _, step, who in sorted(starts + ends):
        running[who] = running.get(who, 0) + step
        peak = max(peak, sum(1 for count in running.values() if count > 0))
    return peak


@contextlib.contextmanager
def owners(daemons: dict[str, EngineProcess]) -> Iterator[dict[int, str]]:
    """The node of each container pid seen while the block runs (sampled: containers come
    and go with the autoscaler, so one look at the end would miss some)."""
    seen: dict[int, str] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for name, pids in container_pids(daemons).items():
                seen.update(dict.fromkeys(pids, name))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


def map_in_background(
    function: warren.Function[[int], int], count: int
) -> tuple[Future[list[int]], list[int]]:
    """``function.map(range(count))`` in a thread (a daemon: a hung map cannot keep pytest
    from exiting): its future, and the results so far."""
    arrived: list[int] = []
    future: Future[list[int]] = Future()

    def run() -> None:
        try:
            for result in function.map(range(count)):
                arrived.append(result)
        except BaseException as exc:  # the test re-raises it
            future.set_exception(exc)
        else:
            future.set_result(arrived)

    threading.Thread(target=run, daemon=True).start()
    return future, arrived


def kill_mid_map(daemon: EngineProcess, arrived: list[int]) -> list[psutil.Process]:
    """SIGKILL a node once the map is under way; its fork server and containers, which
    must go with it."""
    assert wait_until(lambda: len(arrived) >= KILL_AFTER, 60), f"only {len(arrived)} results"
    left = family(daemon)
    daemon.stop(signal.SIGKILL)
    assert len(arrived) < MAP_INPUTS, "the map was over before the node was killed"
    return left


def test_a_bounded_function_spreads_over_three_nodes_and_never_runs_more_than_its_max(
    tmp_path: Path,
) -> None:
    """Given three nodes and a deployed function with max_containers=6
    When 300 inputs of 0.2 s are mapped (a backlog for every container)
    Then containers of every node ran some, and never more than 6 ran at one instant."""
    environment = new_environment()
    with peers(tmp_path, environment, ["node-0", "node-1", "node-2"]) as nodes:
        app = warren.App("bounded", environment=environment)
        nap = app.function(max_containers=6)(timed_nap)
        app.deploy()

        with owners(nodes) as owner:
            runs = list(nap.map(range(300)))

        assert len(runs) == 300
        ran_on = {owner.get(who) for who, _, _ in runs}
        assert None not in ran_on, f"a pid of no node's containers: {runs[:3]}, {owner}"
        assert ran_on == set(nodes)
        assert most_containers_at_once(runs) <= 6


def test_killing_the_leading_node_mid_map_loses_nothing_and_another_node_leads(
    tmp_path: Path,
) -> None:
    """Given three nodes and a deployed function
    When the node that leads the environment is killed (SIGKILL) in the middle of a map
    of 20,000 inputs
    Then the map gives every result once and in order, another node leads, and a deploy
    made after the kill works, nothing restarted."""
    environment = new_environment()
    with peers(tmp_path, environment, ["node-0", "node-1", "node-2"]) as nodes:
        app = warren.App("doubling", environment=environment)
        doubling = app.function()(double)
        app.deploy()
        first = leader(environment, "doubling")

        future, arrived = map_in_background(doubling, MAP_INPUTS)
        left = kill_mid_map(nodes[first], arrived)

        assert future.result(timeout=120) == [2 * x for x in range(MAP_INPUTS)]
        assert wait_until(lambda: gone(left), 15), "the killed node's containers live on"
        assert leader(environment, "doubling", other_than=first) in nodes
        later = warren.App("later", environment=environment)
        after = later.function()(whose)
        later.deploy()
        assert after.remote(7)[0] == 7


def test_killing_a_node_that_does_not_lead_mid_map_moves_its_work_to_the_others(
    tmp_path: Path,
) -> None:
    """Given three nodes and a deployed function
    When a node that does not lead is killed (SIGKILL) in the middle of a map of 20,000
    Then the map gives every result once and in order, and the function's containers are
    then all the survivors' (its status names no other pid, nor the dead node)."""
    environment = new_environment()
    with peers(tmp_path, environment, ["node-0", "node-1", "node-2"]) as nodes:
        app = warren.App("spread", environment=environment)
        spread = app.function()(double)
        app.deploy()
        first = leader(environment, "spread")
        victim = next(name for name in sorted(nodes) if name != first)

        future, arrived = map_in_background(spread, MAP_INPUTS)
        left = kill_mid_map(nodes[victim], arrived)

        assert future.result(timeout=120) == [2 * x for x in range(MAP_INPUTS)]
        assert wait_until(lambda: gone(left), 15), "the killed node's containers live on"
        survivors = {name: daemon for name, daemon in nodes.items() if name != victim}

        def on_survivors_only() -> bool:
            # Each node takes the victim for dead after 3 s of its own without a beat, so
            # the node that answers may still name it for a moment: ask until one does not.
            status = app_status(environment, "spread")
            stats = status.functions["double"]
            theirs = set().union(*container_pids(survivors).values())
            pids = set(stats.pids)
            return victim not in {*status.nodes, *stats.nodes} and bool(pids) and pids <= theirs

        assert wait_until(on_survivors_only, 15), app_status(environment, "spread")


def test_engines_of_two_environments_on_one_broker_never_take_each_others_requests(
    tmp_path: Path,
) -> None:
    """Given a node serving environment A only and another serving B only
    When an app is deployed to A
    Then it runs in the containers of A's node, B's listing does not show it, a deploy to
    an environment no node serves fails at once (EngineNotFoundError), and A's node
    refuses a request of B sent to its own queue (EnvironmentNotServedError)."""
    here, there, nowhere = new_environment(), new_environment(), new_environment()
    a = node(tmp_path, here, "serves-a")
    b = node(tmp_path, there, "serves-b")
    try:
        a.start()
        b.start()
        app = warren.App("local", environment=here)
        where = app.function()(whose)
        app.deploy()

        assert where.remote(1)[1] in {proc.pid for proc in a.containers()}
        assert not b.containers()
        assert "local" in app_names(here)
        assert "local" not in app_names(there)
        with pytest.raises(warren.EngineNotFoundError):
            warren.App("lost", environment=nowhere).deploy()
        with pytest.raises(warren.EnvironmentNotServedError):
            ask(here, GetAppStatus(there, "local"), queue=naming.node_queue("serves-a"))
    finally:
        try:
            stop_nodes(here, [a])
        finally:
            stop_nodes(there, [b])
            forget_peers_environment(nowhere)


def test_a_deployed_app_comes_back_from_the_registry_on_a_new_node_with_an_empty_state_dir(
    tmp_path: Path,
) -> None:
    """Given an app deployed on the only node of an environment
    When that node stops (SIGTERM) and a new node starts with an empty state directory
    Then the new node has the app, from the environment's registry stream, and runs it."""
    environment = new_environment()
    first = node(tmp_path, environment, "first")
    second = node(tmp_path, environment, "second")
    try:
        first.start()
        app = warren.App("kept", environment=environment)
        app.function()(double)
        app.deploy()
        assert first.stop(signal.SIGTERM) == 0

        assert not (tmp_path / "second").exists()
        second.start()
        assert "kept" in app_names(environment)
        handle = warren.Function.from_name("kept", "double", environment_name=environment)
        assert handle.remote(21) == 42
    finally:
        stop_nodes(environment, [first, second])
