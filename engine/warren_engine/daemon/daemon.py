"""The engine daemon: the process that answers control requests and hosts apps.

It makes its parts once connected, each with what it needs, and closes them in the
reverse order: the client it calls agents and web endpoints with, the app registry
(:mod:`warren_engine.daemon.app_registry`), the HTTP gateway, the cancel listener, and
the control plane (:mod:`warren_engine.daemon.control_plane`) that answers requests.

It listens on an *exclusive* control queue, so the queue exists exactly while an
engine is connected: a client that publishes a request with ``mandatory=True`` learns
at once whether an engine is there. The daemon uses ``warren.v1.control``; an engine
started by ``app.run()`` for one script uses a private ``warren.v1.control.<run>`` and
follows its parent process (it stops when the parent dies).

On SIGTERM it stops taking inputs: containers finish what they run and exit, deployed
apps' queued inputs stay queued for the next start, ephemeral apps are stopped; then
it exits 0. Deployed apps come back on the next start (see :mod:`warren_engine.daemon.records`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.exceptions import ChannelLockedResource
from warren import exceptions
from warren.client.connection import Client
from warren.config import RECONNECT_INTERVAL, Settings, hide_engine_only_variables
from warren.wire import naming

from warren_engine.daemon.app_registry import AppRegistry
from warren_engine.daemon.cancel_listener import CancelListener
from warren_engine.daemon.control_plane import ControlPlane
from warren_engine.daemon.dashboard.access import DashboardAccess
from warren_engine.daemon.dashboard.dashboard import Dashboard
from warren_engine.daemon.gateway import Gateway
from warren_engine.daemon.health import Health
from warren_engine.daemon.secret_store import SecretStore
from warren_engine.nodes.agent import AgentPools, node_name
from warren_engine.nodes.primary import Nodes, RemotePools
from warren_engine.pool import processes as procs
from warren_engine.pool.cancel_memory import CancelMemory
from warren_engine.pool.metrics import EngineMetrics
from warren_engine.pool.node_capacity import Node

log = structlog.get_logger(__name__)

PARENT_POLL_SECONDS = 0.5
PR_SET_PDEATHSIG = 1
HTTP_PORT_FILE = "http-port"  # in the state directory: the port the gateway last served on


class Engine:
    def __init__(
        self,
        config: Settings,
        *,
        run_id: str | None = None,
        parent_pid: int | None = None,
        state_dir: Path | None = None,
        join: str | None = None,
    ) -> None:
        self.settings = config
        # What this node offers, from the settings: a bad WARREN_GPUS fails here, at start.
        self.node = Node.from_settings(config)
        # An agent node (``join`` is its name) listens on a queue of its own.
        self.join = join
        self.control_queue = naming.node_queue(join) if join else naming.control_queue(run_id)
        self.parent_pid = parent_pid
        self._owns_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="warren-engine-"))
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        _keep_engine_credentials_from_containers(self.settings)
        await asyncio.to_thread(procs.warm_up)
        connection = await aio_pika.connect_robust(
            self.settings.broker_url,
            reconnect_interval=RECONNECT_INTERVAL,
            client_properties={"connection_name": "warren-engine"},
        )
        try:
            async with contextlib.AsyncExitStack() as stack:
                await self._serve_on(connection, stack)
        finally:
            leftovers = procs.kill_leftovers()
            if leftovers:
                log.error("containers_left_running_were_killed", pids=leftovers)
            await connection.close()
            if self._owns_state_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            log.info("engine_stopped")

    async def _serve_on(
        self, connection: AbstractRobustConnection, stack: contextlib.AsyncExitStack
    ) -> None:
        """Make the engine's parts, each closed by ``stack`` in the reverse order."""
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(self.control_queue, exclusive=True)
        except ChannelLockedResource:
            raise exceptions.EngineError(
                f"another engine already listens on {self.control_queue!r}"
            ) from None
        # The gateway and the primary's messages to agents go through the broker like any
        # client's.
        client = await Client(self.settings).open()
        stack.push_async_callback(client.close)
        cancel_memory = CancelMemory()
        registry = await self._registry(connection, channel, client, cancel_memory)
        stack.push_async_callback(registry.shutdown)
        dashboard = self._dashboard(registry, client, lambda: gateway.base_url)
        health = Health(connection, channel)
        gateway = Gateway(
            registry,
            client,
            self.settings.http_host,
            self.settings.http_port,
            self.settings.public_url,
            debug=self.settings.http_debug,
            # A daemon's endpoints keep their URLs across restarts; an app run's engine
            # (a state directory of its own, removed at exit) takes any free port.
            port_record=None if self._owns_state_dir else self.state_dir / HTTP_PORT_FILE,
            metrics=registry.metrics,
            metrics_public=self.settings.metrics_public,
            token=dashboard.access.token
            if dashboard is not None
            else self.settings.dashboard_token,
            dashboard=dashboard,
            health=health,
        )
        await gateway.start()
        stack.push_async_callback(gateway.close)
        if dashboard is not None and gateway.base_url:
            dashboard.start()
            stack.push_async_callback(dashboard.close)
            _announce(dashboard.access, gateway.base_url)
        agent = AgentPools(registry, self.join) if self.join else None
        if agent is None:
            await registry.restore()
        seals = registry.signer
        cancels = CancelListener(channel, seals, cancel_memory)
        for environment in registry.environments():
            await cancels.listen(environment)
        control = ControlPlane(registry, cancels, gateway, channel, seals, agent)
        stack.push_async_callback(control.close)
        stack.callback(log.info, "engine_stopping")
        await queue.consume(control.on_message)
        health.consuming()
        log.info("engine_started", control_queue=self.control_queue, pid=os.getpid())
        sys.stdout.write(f"READY {self.control_queue}\n")
        sys.stdout.flush()
        os.dup2(2, 1)  # nothing more for whoever reads our stdout: keep it from filling up
        await self._run_until_stopped(registry, agent, client)

    async def _registry(
        self,
        connection: AbstractRobustConnection,
        channel: AbstractRobustChannel,
        client: Client,
        cancels: CancelMemory,
    ) -> AppRegistry:
        nodes = Nodes(self.node)
        return AppRegistry(
            self.settings,
            connection,
            channel,
            await connection.channel(publisher_confirms=True),
            self.state_dir,
            cancels,
            SecretStore(self.state_dir),
            nodes,
            RemotePools(nodes, client),
            EngineMetrics(self.join or node_name(self.settings.node_name)),
        )

    def _dashboard(
        self, registry: AppRegistry, client: Client, base_url: Callable[[], str]
    ) -> Dashboard | None:
        """A daemon's dashboard (its token kept in the state directory unless configured);
        an engine of one ``app.run()`` has one only when ``WARREN_DASHBOARD_TOKEN`` is set."""
        state_dir = None if self._owns_state_dir else self.state_dir
        access = DashboardAccess.for_engine(self.settings.dashboard_token, state_dir)
        if access is None:
            return None
        return Dashboard(
            access,
            registry,
            client.session,
            local_node=node_name(self.settings.node_name),
            base_url=base_url,
            dead_letters=registry.dead_letters.list,
        )

    async def _run_until_stopped(
        self, registry: AppRegistry, agent: AgentPools | None, client: Client
    ) -> None:
        watchers = [asyncio.create_task(registry.watch_leases())]
        if agent is not None:
            watchers.append(asyncio.create_task(agent.keep_joining(client)))
        if self.parent_pid:
            watchers.append(asyncio.create_task(self._watch_parent()))
        try:
            await self._stop.wait()
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def _watch_parent(self) -> None:
        _signal_when_parent_dies()
        while os.getppid() == self.parent_pid:
            await asyncio.sleep(PARENT_POLL_SECONDS)
        log.warning("engine_orphaned", parent=self.parent_pid)
        self._stop.set()


def _announce(access: DashboardAccess, base_url: str) -> None:
    """Tell the operator where the dashboard is: on stderr, once, and in no log record."""
    if access.kept_in is not None:  # made here: its URL is the way in
        where = f"{base_url}/?token={access.token}"
    else:  # configured: the operator has it already
        where = f"{base_url}/ (token: WARREN_DASHBOARD_TOKEN)"
    sys.stderr.write(f"dashboard: {where}\n")
    sys.stderr.flush()


def _keep_engine_credentials_from_containers(config: Settings) -> None:
    """Containers are forked from a server started after this: with its own container
    user configured, the engine's credentials must not be in their environment.

    Functions that call other functions find ``WARREN_BROKER_URL`` there: the value of
    ``WARREN_FUNCTION_BROKER_URL`` (a caller's rights) if set, else the container URL.
    Written for the containers' code only: the engine itself keeps ``config``.
    """
    hide_engine_only_variables()  # the dashboard's token
    if config.container_broker_url != config.broker_url:
        functions_url = config.function_broker_url or config.container_broker_url
        os.environ["WARREN_BROKER_URL"] = functions_url


def _signal_when_parent_dies() -> None:
    # Linux delivers SIGTERM the moment the parent dies; the polling loop is the fallback
    # (and the only mechanism elsewhere).
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def run_engine(config: Settings, **kwargs: Any) -> None:
    engine = Engine(config, **kwargs)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, engine.request_stop)
    await engine.serve()
