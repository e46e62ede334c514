"""Two engine nodes with labels: placement by region, and containers across nodes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import warren
from support import EngineProcess, engine_running, forget_environment, stop_all_apps, wait_until
from warren.client.connection import Client
from warren.wire import naming
from warren.wire.control import ListContainers, ListNodes, NodeInfo, StopContainer

ENVIRONMENT = f"test-placement-{uuid.uuid4().hex[:8]}"
app = warren.App("test-placement", environment=ENVIRONMENT)


@app.function()
def where() -> dict[str, Any]:
    return {"region": os.environ.get("WARREN_REGION"), "pid": os.getpid()}


@pytest.fixture(scope="module", autouse=True)
def _forget_environment() -> Iterator[None]:
    yield
    forget_environment(ENVIRONMENT)


async def control(request: Any) -> Any:
    async with Client.connect(environment=ENVIRONMENT) as client:
        return await client.control(request)


def nodes() -> list[NodeInfo]:
    return list(asyncio.run(control(ListNodes(ENVIRONMENT))).nodes)


def sees_both(node: str) -> bool:
    async def ask() -> set[str]:
        async with Client.connect(environment=ENVIRONMENT) as client:
            listing = await client.control(ListNodes(ENVIRONMENT), queue=naming.node_queue(node))
            return {info.name for info in listing.nodes}

    return asyncio.run(ask()) == {"eu-1", "us-1"}


@contextlib.contextmanager
def two_labelled_nodes(tmp_path: Path) -> Iterator[tuple[EngineProcess, EngineProcess]]:
    """Two peer engine nodes of the environment, one labelled eu and one us."""
    eu_env = {"WARREN_REGION": "eu"}
    with engine_running(tmp_path / "eu", eu_env, args=("--node-name", "eu-1")) as eu:
        us = EngineProcess(
            tmp_path / "us",
            {"WARREN_REGION": "us", "WARREN_STOP_GRACE": "2"},
            args=("--node-name", "us-1"),
        )
        us.start()
        try:
            # Each node has heard the other (whichever takes a request must know both).
            for name in ("eu-1", "us-1"):
                assert wait_until(lambda name=name: sees_both(name), 20)
            yield eu, us
        finally:
            us.stop()


def test_a_variant_runs_on_the_node_of_its_region_and_a_region_no_node_has_fails(
    tmp_path: Path,
) -> None:
    """Given nodes labelled eu and us, when variants ask for a region, then each runs on
    the node of its region; a region no node has is refused, naming what each offers."""
    with two_labelled_nodes(tmp_path) as (eu, us):
        app.deploy()
        handle = warren.Function.from_name("test-placement", "where", environment_name=ENVIRONMENT)
        in_eu = handle.with_options(region="eu").remote()
        assert in_eu["region"] == "eu"
        assert in_eu["pid"] in {p.pid for p in eu.containers()}
        in_us = handle.with_options(region="us").remote()
        assert in_us["region"] == "us"
        assert in_us["pid"] in {p.pid for p in us.containers()}
        with pytest.raises(warren.InvalidError, match=r"region ap.*(eu-1|us-1) \(region (eu|us)\)"):
            handle.with_options(region="ap").remote()
        stop_all_apps()
        assert wait_until(lambda: not us.containers() and not eu.containers(), 20)


def test_any_node_lists_and_stops_the_containers_of_every_node(tmp_path: Path) -> None:
    """Given a pool that runs on the us node only, when the environment's control queue
    (whichever node takes it) is asked for the app's containers, then the us node's are
    listed with their pids, and stopping one through any node stops it there."""
    with two_labelled_nodes(tmp_path) as (_, us):
        app.deploy()
        handle = warren.Function.from_name("test-placement", "where", environment_name=ENVIRONMENT)
        in_us = handle.with_options(region="us").remote()
        for _ in range(4):  # whichever node answers, the listing is the same
            listing = asyncio.run(control(ListContainers(ENVIRONMENT, "test-placement")))
            assert listing.errors == ()
            on_us = [info for info in listing.containers if info.node == "us-1"]
            assert in_us["pid"] in [info.pid for info in on_us]
        mine = next(info for info in on_us if info.pid == in_us["pid"])
        stopped = asyncio.run(control(StopContainer(ENVIRONMENT, mine.id)))
        assert (stopped.id, stopped.node, stopped.state) == (mine.id, "us-1", "stopping")
        assert wait_until(lambda: in_us["pid"] not in {p.pid for p in us.containers()}, 20)
        stop_all_apps()
