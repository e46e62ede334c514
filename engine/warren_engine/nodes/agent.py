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
import shutil
import socket
from typing import Any

import structlog
from warren import exceptions
from warren.client.connection import Client
from warren.wire import naming
from warren.wire.spec import FunctionSpec

from warren_engine.daemon.apps import Host
from warren_engine.daemon.hosted_app import HostedApp
from warren_engine.nodes.primary import HEARTBEAT_SECONDS
from warren_engine.pool.autoscaler import Autoscaling

log = structlog.get_logger(__name__)


def node_name(configured: str | None) -> str:
    return naming.check_part("node name", configured or socket.gethostname().split(".")[0])


class AgentPools:
    def __init__(self, host: Host, name: str) -> None:
        self.host = host
        self.name = name
        self.queue = naming.node_queue(name)

    @staticmethod
    def _slot(args: dict[str, Any]) -> tuple[str, str]:
        # Each deploy (generation) of an app is an app of its own here: a redeploy's pools
        # start beside the old ones, which the primary drops once the new ones run.
        return args["environment"], f"{args['instance']}#{args['generation']}"

    def _find(self, args: dict[str, Any]) -> tuple[HostedApp, str]:
        app = self.host.apps.get(self._slot(args))
        if app is None or args["key"] not in app.pools:
            raise exceptions.NotFoundError(f"node {self.name} runs no pool {args['key']!r}")
        return app, args["key"]

    async def host_pool(self, args: dict[str, Any]) -> dict[str, Any]:
        environment, key = args["environment"], args["key"]
        slot = self._slot(args)
        app = self.host.apps.get(slot)
        if app is None:
            generation = str(args["generation"]).replace(".", "-")
            code_path = (
                self.host.state_dir / "nodes" / environment / args["instance"] / generation
            ) / "code.msgpack"
            code_path.parent.mkdir(parents=True, exist_ok=True)
            code_path.write_bytes(args["code"])
            app = HostedApp(
                environment,
                args["app"],
                args["instance"],
                {},
                code_path,
                ephemeral=True,
                sys_path=tuple(args.get("sys_path", ())),
                owned=False,
                deployed_at=float(args["generation"]),
            )
            self.host.apps[slot] = app
        if key in app.specs:
            return {}  # placed here already (a heartbeat raced the original request)
        app.specs[key] = FunctionSpec.from_wire(args["spec"])
        try:
            republisher = await self.host.prepare(environment)
            environ = dict(args["environ"])
            await self.host.add_pool(app, key, republisher, int(args["warm"]), environ)
        except BaseException:
            app.specs.pop(key, None)
            raise
        log.info("pool_hosted", app=app.app, function=key)
        return {}

    async def drop_pool(self, args: dict[str, Any]) -> dict[str, Any]:
        slot = self._slot(args)
        app = self.host.apps.get(slot)
        if app is None or args["key"] not in app.pools:
            return {}
        await app.pools.pop(args["key"]).stop()
        app.specs.pop(args["key"], None)
        if not app.pools:
            del self.host.apps[slot]
            shutil.rmtree(app.code_path.parent, ignore_errors=True)
        log.info("pool_dropped", app=app.app, function=args["key"])
        return {}

    async def pool_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        app, key = self._find(args)
        return app.pools[key].stats()

    async def update_pool(self, args: dict[str, Any]) -> dict[str, Any]:
        app, key = self._find(args)
        app.pools[key].update(Autoscaling(**args["settings"]))
        return {}

    def heartbeat(self) -> dict[str, Any]:
        pools = [
            [app.environment, app.instance, key]
            for app in self.host.apps.values()
            for key in app.pools
        ]
        return {
            "name": self.name,
            "queue": self.queue,
            "node": self.host.node.to_wire(),
            "pools": pools,
        }

    async def keep_joining(self, client: Client) -> None:
        """Tell the primary about this node, over and over (it may start after us)."""
        joined = False
        while True:
            try:
                await client.control("join_node", self.heartbeat(), timeout=HEARTBEAT_SECONDS * 2)
                if not joined:
                    log.info("node_joined", node=self.name)
                joined = True
            except exceptions.WarrenError as exc:
                if joined:
                    log.warning("primary_unreachable", node=self.name, reason=str(exc))
                joined = False
            await asyncio.sleep(HEARTBEAT_SECONDS)
