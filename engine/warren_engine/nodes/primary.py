"""Several engine nodes: one primary, and agents that join it.

The engine daemon that holds ``warren.v1.control`` is the *primary*: apps are
deployed to it and it answers every client. ``warren engine --join`` starts an
*agent* on another machine (or with other labels): it listens on its own queue,
``warren.v1.node.<name>``, and tells the primary every few seconds what it offers
(cores, memory, GPUs, region and cloud labels) and which pools it runs.

When a function (or a variant) asks for what the primary's own node cannot give
(another region, a GPU), the primary places its pool on an agent that can: it sends
the agent the app's code and the function's spec, and the agent runs the pool on its
queue as if it were local. Stopping or redeploying the app drops those pools; an
agent that restarts is sent its pools again when it rejoins. Placement happens when
a pool is made; a pool stays where it was placed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field

import structlog
from warren.client.connection import Client
from warren.exceptions import InvalidError, NotFoundError, WarrenError
from warren.wire.control import (
    AutoscalerSettings,
    ContainerInfo,
    ContainerListing,
    DropPool,
    GetPoolStats,
    HostPool,
    JoinNode,
    ListContainers,
    NodeInfo,
    PlacedPool,
    PoolStats,
    StopContainer,
    UpdatePool,
)
from warren.wire.spec import FunctionSpec

from warren_engine.daemon.hosted_app import HostedApp
from warren_engine.pool.node_capacity import Node

log = structlog.get_logger(__name__)

# The primary's own node, as node listings and container listings name it.
PRIMARY_NODE = "primary"
HEARTBEAT_SECONDS = 2.0
HEARTBEATS_MISSED = 3
AGENT_TIMEOUT = 120.0  # placing a pool starts containers, which may import a lot


def placed_pool(app: HostedApp, key: str) -> PlacedPool:
    return PlacedPool(app.environment, app.instance, key, app.deployed_at)


@dataclass
class Agent:
    name: str
    queue: str
    node: Node
    seen: float = field(default_factory=time.monotonic)
    pools: set[PlacedPool] = field(default_factory=set)

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.seen < HEARTBEAT_SECONDS * HEARTBEATS_MISSED


class Nodes:
    """The primary's view of the nodes: its own, and the agents that joined."""

    def __init__(self, local: Node) -> None:
        self.local = local
        self.agents: dict[str, Agent] = {}

    def joined(self, heartbeat: JoinNode) -> Agent:
        """Record an agent's heartbeat (the agent, as it is now)."""
        agent = self.agents.get(heartbeat.name)
        node = Node.offered(heartbeat.node)
        if agent is None or agent.queue != heartbeat.queue:
            agent = self.agents[heartbeat.name] = Agent(heartbeat.name, heartbeat.queue, node)
        agent.node, agent.seen = node, time.monotonic()
        agent.pools = set(heartbeat.pools)
        return agent

    def place(self, spec: FunctionSpec) -> str | None:
        """Where ``spec``'s pool goes: None for this node, else an agent's name.

        Raises ``InvalidError`` naming the request and what every node offers.
        """
        problem = self.local.problem(spec)
        if problem is None:
            return None
        for agent in self.agents.values():
            if agent.alive and agent.node.problem(spec) is None:
                return agent.name
        others = [f"{a.name} ({_describe(a.node)})" for a in self.agents.values() if a.alive]
        if others:
            problem += f"; nor do the other nodes: {', '.join(others)}"
        raise InvalidError(problem)

    def listing(self) -> tuple[NodeInfo, ...]:
        local = NodeInfo(PRIMARY_NODE, self.local.offer(), alive=True, pools=0)
        agents = [
            NodeInfo(a.name, a.node.offer(), a.alive, len(a.pools)) for a in self.agents.values()
        ]
        return (local, *agents)


def _describe(node: Node) -> str:
    labels = [
        f"region {node.region}" if node.region else "",
        f"cloud {node.cloud}" if node.cloud else "",
    ]
    gpus = ", ".join(f"{kind}:{n}" for kind, n in node.gpus.items())
    return ", ".join(part for part in [*labels, gpus] if part) or "no labels"


class RemotePools:
    """The primary's side of pools placed on agents: host, drop, ask, update.

    It sends requests only; which pool is placed where is the app registry's to record.
    """

    def __init__(self, nodes: Nodes, client: Client) -> None:
        self.nodes = nodes
        self._client = client

    async def host(
        self, app: HostedApp, key: str, node: str, warm: int, environ: dict[str, str | None]
    ) -> None:
        agent = self.nodes.agents[node]
        request = HostPool(
            placed_pool(app, key),
            app.app,
            app.specs[key],
            app.code_path.read_bytes(),
            app.sys_path,
            environ,  # secrets resolved here: agents keep none of their own
            warm,
        )
        await self._client.control(request, queue=agent.queue, timeout=AGENT_TIMEOUT)
        log.info("pool_placed", app=app.app, function=key, node=agent.name)

    async def drop(self, app: HostedApp, key: str, node: str) -> None:
        agent = self.nodes.agents.get(node)
        if agent is not None:
            with contextlib.suppress(WarrenError):  # a node that is gone runs nothing
                await self._client.control(
                    DropPool(placed_pool(app, key)), queue=agent.queue, timeout=AGENT_TIMEOUT
                )

    async def stats(self, app: HostedApp, key: str, node: str) -> PoolStats:
        agent = self.nodes.agents[node]
        try:
            stats = await self._client.control(
                GetPoolStats(placed_pool(app, key)), queue=agent.queue, timeout=AGENT_TIMEOUT
            )
        except WarrenError as exc:
            return PoolStats(node=agent.name, error=str(exc))
        return dataclasses.replace(stats, node=agent.name)

    async def containers(self, node: str, request: ListContainers) -> ContainerListing:
        """An agent's containers; none, and the reason, if it cannot be asked."""
        agent = self.nodes.agents[node]
        try:
            return await self._client.control(request, queue=agent.queue, timeout=AGENT_TIMEOUT)
        except NotFoundError:  # its pools of the app were dropped meanwhile
            return ContainerListing(())
        except WarrenError as exc:
            return ContainerListing((), (f"node {agent.name}: {type(exc).__name__}: {exc}",))

    async def stop_container(self, node: str, request: StopContainer) -> ContainerInfo | None:
        """Ask an agent to stop one of its containers (None: it runs no such container)."""
        agent = self.nodes.agents[node]
        try:
            return await self._client.control(request, queue=agent.queue, timeout=AGENT_TIMEOUT)
        except NotFoundError:
            return None

    async def update(
        self, app: HostedApp, key: str, node: str, settings: AutoscalerSettings
    ) -> None:
        agent = self.nodes.agents[node]
        await self._client.control(
            UpdatePool(placed_pool(app, key), settings), queue=agent.queue, timeout=AGENT_TIMEOUT
        )
