"""Two engine nodes: placement by region across a primary and an agent that joined it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import warren
from support import EngineProcess, engine_running, stop_all_apps, wait_until
from warren.client.connection import Client
from warren.wire.control import ListContainers, ListNodes, NodeInfo, StopContainer

app = warren.App("test-nodes")


@app.function()
def where() -> dict[str, Any]:
    return {"region": os.environ.get("WARREN_REGION"), "pid": os.getpid()}


def nodes() -> list[NodeInfo]:
    async def listing() -> list[NodeInfo]:
        async with Client.connect() as client:
            return list((await client.control(ListNodes())).nodes)

    return asyncio.run(listing())


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[EngineProcess, EngineProcess]]:
    """A primary engine labelled eu, and an agent labelled us that joined it."""
    joining = ("--join", "--node-name", "us-1")
    with (
        engine_running(tmp_path / "eu", {"WARREN_REGION": "eu"}) as primary,
        engine_running(tmp_path / "us", {"WARREN_REGION": "us"}, args=joining) as agent,
    ):
        assert wait_until(lambda: any(n.name == "us-1" and n.alive for n in nodes()), 20)
        yield primary, agent


def test_a_variant_runs_on_the_node_of_its_region_and_a_region_no_node_has_fails(
    two_nodes: tuple[EngineProcess, EngineProcess],
) -> None:
    primary, agent = two_nodes
    app.deploy()
    handle = warren.Function.from_name("test-nodes", "where")
    # A variant for region eu runs on the first engine...
    in_eu = handle.with_options(region="eu").remote()
    assert in_eu["region"] == "eu"
    assert in_eu["pid"] in {p.pid for p in primary.containers()}
    # ...one for region us on the agent node, which runs its pool
    in_us = handle.with_options(region="us").remote()
    assert in_us["region"] == "us"
    assert in_us["pid"] in {p.pid for p in agent.containers()}
    # ...and the agent's heartbeats, which now name that pool, keep it alive and joined
    assert wait_until(lambda: any(n.name == "us-1" and n.pools == 1 for n in nodes()), 10)
    assert all(n.alive for n in nodes())
    # ...and one for a region no node is in fails, naming the request and the nodes
    with pytest.raises(warren.InvalidError, match=r"region ap.*us-1 \(region us\)"):
        handle.with_options(region="ap").remote()
    # Stopping the app drops the agent's pool too
    stop_all_apps()
    assert wait_until(lambda: not agent.containers(), 20)


def test_containers_of_a_pool_placed_on_an_agent_are_listed_and_stopped_through_the_primary(
    two_nodes: tuple[EngineProcess, EngineProcess],
) -> None:
    primary, agent = two_nodes
    app.deploy()
    handle = warren.Function.from_name("test-nodes", "where")
    in_us = handle.with_options(region="us").remote()  # its pool runs on the agent

    async def control(request: Any) -> Any:
        async with Client.connect() as client:
            return await client.control(request)

    # When the primary is asked for the app's containers
    listing = asyncio.run(control(ListContainers("main", "test-nodes")))
    # Then the agent's are among them, named by its node, with their pids
    assert listing.errors == ()
    on_agent = [info for info in listing.containers if info.node == "us-1"]
    assert [info.pid for info in on_agent] == [in_us["pid"]]
    assert {info.pid for info in listing.containers if info.node == "primary"} == {
        p.pid for p in primary.containers()
    }
    # And stopping it through the primary stops it on the agent
    stopped = asyncio.run(control(StopContainer("main", on_agent[0].id)))
    assert (stopped.id, stopped.node, stopped.state) == (on_agent[0].id, "us-1", "stopping")
    assert wait_until(lambda: in_us["pid"] not in {p.pid for p in agent.containers()}, 20)
