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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from warren.exceptions import InvalidError, WarrenError
from warren.wire.spec import FunctionSpec

from warren_engine.daemon.hosted_app import HostedApp
from warren_engine.pool.node_capacity import Node

log = structlog.get_logger(__name__)

HEARTBEAT_SECONDS = 2.0
HEARTBEATS_MISSED = 3

# (environment, app instance, pool key, generation: the app's deploy time): one pool.
PoolRef = tuple[str, str, str, float]


@dataclass
class Agent:
    name: str
    queue: str
    node: Node
    seen: float = field(default_factory=time.monotonic)
    pools: set[PoolRef] = field(default_factory=set)

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.seen < HEARTBEAT_SECONDS * HEARTBEATS_MISSED


class Nodes:
    """The primary's view of the nodes: its own, and the agents that joined."""

    def __init__(self, local: Node) -> None:
        self.local = local
        self.agents: dict[str, Agent] = {}

    def joined(self, info: dict[str, Any]) -> Agent:
        """Record an agent's heartbeat (the agent, as it is now)."""
        agent = self.agents.get(info["name"])
        node = Node.from_wire(info["node"])
        if agent is None or agent.queue != info["queue"]:
            agent = self.agents[info["name"]] = Agent(info["name"], info["queue"], node)
        agent.node, agent.seen = node, time.monotonic()
        agent.pools = {(p[0], p[1], p[2], float(p[3])) for p in info.get("pools", [])}
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

    def listing(self) -> list[dict[str, Any]]:
        local = {"name": "primary", **self.local.to_wire(), "alive": True}
        return [local] + [
            {"name": a.name, **a.node.to_wire(), "alive": a.alive, "pools": len(a.pools)}
            for a in self.agents.values()
        ]


def _describe(node: Node) -> str:
    labels = [
        f"region {node.region}" if node.region else "",
        f"cloud {node.cloud}" if node.cloud else "",
    ]
    gpus = ", ".join(f"{kind}:{n}" for kind, n in node.gpus.items())
    return ", ".join(part for part in [*labels, gpus] if part) or "no labels"


Control = Callable[[str, dict[str, Any], str], Awaitable[dict[str, Any]]]


class RemotePools:
    """The primary's side of pools placed on agents: host, drop, ask, update."""

    def __init__(self, nodes: Nodes, control: Control) -> None:
        self.nodes = nodes
        self._control = control

    def _args(self, app: HostedApp, key: str) -> dict[str, Any]:
        return {
            "environment": app.environment,
            "instance": app.instance,
            "key": key,
            "generation": app.deployed_at,
        }

    async def host(
        self, app: HostedApp, key: str, warm: int, environ: dict[str, str | None]
    ) -> None:
        agent = self.nodes.agents[app.remote[key]]
        request = {
            **self._args(app, key),
            "app": app.app,
            "spec": app.specs[key].to_wire(),
            "code": app.code_path.read_bytes(),
            "sys_path": list(app.sys_path),
            "environ": environ,  # secrets resolved here: agents keep none of their own
            "warm": warm,
        }
        await self._control("host_pool", request, agent.queue)
        log.info("pool_placed", app=app.app, function=key, node=agent.name)

    async def drop(self, app: HostedApp, key: str) -> None:
        agent = self.nodes.agents.get(app.remote.pop(key, ""))
        if agent is not None:
            with contextlib.suppress(WarrenError):  # a node that is gone runs nothing
                await self._control("drop_pool", self._args(app, key), agent.queue)

    async def stats(self, app: HostedApp, key: str) -> dict[str, Any]:
        agent = self.nodes.agents[app.remote[key]]
        try:
            stats = await self._control("pool_stats", self._args(app, key), agent.queue)
        except WarrenError as exc:
            return {"node": agent.name, "error": str(exc)}
        return {**stats, "node": agent.name}

    async def update(self, app: HostedApp, key: str, settings: dict[str, Any]) -> None:
        agent = self.nodes.agents[app.remote[key]]
        await self._control(
            "update_pool", {**self._args(app, key), "settings": settings}, agent.queue
        )

    async def rehost(
        self,
        apps: list[HostedApp],
        name: str,
        running: set[PoolRef],
        environ: Callable[[str, FunctionSpec], dict[str, str | None]],
    ) -> None:
        """On an agent's heartbeat: adopt the pools it runs that wait for a node (this
        primary restarted), give it the waiting ones it can run, and send it back those
        placed on it that it does not run (it restarted)."""
        agent = self.nodes.agents[name]
        for app in apps:
            for key in list(app.pending):
                ref = (app.environment, app.instance, key, app.deployed_at)
                if ref in running:
                    app.pending.discard(key)
                    app.remote[key] = name
                elif agent.node.problem(app.specs[key]) is None:
                    app.pending.discard(key)
                    app.remote[key] = name  # sent below: the agent does not run it
            for key, node in list(app.remote.items()):
                ref = (app.environment, app.instance, key, app.deployed_at)
                if node == name and ref not in running:
                    log.warning("pool_placed_again", app=app.app, function=key, node=name)
                    try:
                        await self.host(app, key, 0, environ(app.environment, app.specs[key]))
                    except WarrenError as exc:  # the next heartbeat tries again
                        log.warning("pool_not_placed", app=app.app, function=key, reason=str(exc))
