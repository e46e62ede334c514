"""An agent engine node: runs the pools its primary places on it.

See :mod:`warren_engine.nodes.primary`.

It keeps no deployments of its own. The primary sends it a pool with the app's code,
the function's spec and the containers' environment (secrets resolved by the
primary); the agent runs it against the function's queue, reports its stats, applies
autoscaler changes, and drops it when the app stops or is redeployed. Every
``HEARTBEAT_SECONDS`` it tells the primary what it offers and which pools it runs,
so that a primary that restarted learns of it again, and an agent that restarted
gets its pools back.
"""

from __future__ import annotations

import asyncio
import socket

import structlog
from warren import exceptions
from warren.client.connection import Client
from warren.wire import naming
from warren.wire.control import DropPool, GetPoolStats, HostPool, JoinNode, PoolStats, UpdatePool

from warren_engine.daemon.app_registry import AppRegistry
from warren_engine.nodes.primary import HEARTBEAT_SECONDS
from warren_engine.pool.autoscaler import Autoscaling

log = structlog.get_logger(__name__)


def node_name(configured: str | None) -> str:
    return naming.check_part("node name", configured or socket.gethostname().split(".")[0])


class AgentPools:
    """An agent's side of the pools its primary places here (kept by the app registry)."""

    def __init__(self, registry: AppRegistry, name: str) -> None:
        self._registry = registry
        self.name = name
        self.queue = naming.node_queue(name)

    async def host_pool(self, request: HostPool) -> None:
        await self._registry.host_placed(request)

    async def drop_pool(self, request: DropPool) -> None:
        await self._registry.drop_placed(request.pool)

    async def pool_stats(self, request: GetPoolStats) -> PoolStats:
        return await self._registry.placed_stats(request.pool, self.name)

    def update_pool(self, request: UpdatePool) -> None:
        self._registry.update_placed(
            request.pool, self.name, Autoscaling.from_settings(request.settings)
        )

    def heartbeat(self) -> JoinNode:
        return JoinNode(self.name, self.queue, self._registry.node.offer(), self._registry.placed())

    async def keep_joining(self, client: Client) -> None:
        """Tell the primary about this node, over and over (it may start after us)."""
        joined = False
        while True:
            try:
                await client.control(self.heartbeat(), timeout=HEARTBEAT_SECONDS * 2)
                if not joined:
                    log.info("node_joined", node=self.name)
                joined = True
            except exceptions.WarrenError as exc:
                if joined:
                    log.warning("primary_unreachable", node=self.name, reason=str(exc))
                joined = False
            await asyncio.sleep(HEARTBEAT_SECONDS)
