"""The engine daemon: one engine node, which answers control requests and hosts apps.

It makes its parts once connected, each with what it needs, and closes them in the
reverse order: the client it calls peers and web endpoints with, its place in the
cluster (:mod:`warren_engine.cluster.cluster`), the app registry
(:mod:`warren_engine.daemon.app_registry`) and the changes made to it
(:mod:`warren_engine.daemon.app_changes`), the HTTP gateway, the cancel listener, and the
control plane (:mod:`warren_engine.daemon.control_plane`) that answers requests.

A daemon serves the environments it is started for (``--env a,b``, default
``WARREN_ENVIRONMENT``'s): it consumes ``warren.v1.<env>.control`` for each, beside the
other nodes that serve it, and ``warren.v1.node.<name>``, its own queue, where its
peers ask it for its containers. Control queues are auto-deleted with their last
consumer, so a client that publishes a request with ``mandatory=True`` learns at once
whether any engine serves the environment. An engine started by ``app.run()`` for one
script is a node alone: it uses a private ``warren.v1.control.<run>``, keeps its
registry in memory, and follows its parent process (it stops when the parent dies).

On SIGTERM it stops taking inputs: containers finish what they run and exit, deployed
apps' queued inputs stay queued for the other nodes or the next start; a node alone
stops its ephemeral apps. Then it exits 0. Deployed apps come back on the next start,
from the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aio_pika.abc import AbstractQueue, AbstractRobustChannel, AbstractRobustConnection
from aiormq.exceptions import ChannelLockedResource
from warren import exceptions
from warren.client.connection import Client
from warren.config import RECONNECT_INTERVAL, Settings, hide_engine_only_variables
from warren.wire import broker_urls, naming
from warren.wire.amqp import CONNECT_TIMEOUT, NODE_HEARTBEAT_SECONDS
from warren.wire.signing import signer

from warren_engine.cluster.cluster import Cluster
from warren_engine.daemon.app_changes import AppChanges
from warren_engine.daemon.app_registry import AppRegistry
from warren_engine.daemon.cancel_listener import CancelListener
from warren_engine.daemon.control_plane import ControlPlane
from warren_engine.daemon.dashboard.access import DashboardAccess
from warren_engine.daemon.dashboard.dashboard import Dashboard
from warren_engine.daemon.gateway import Gateway
from warren_engine.daemon.health import Health
from warren_engine.daemon.secret_store import SecretStore
from warren_engine.pool import processes as procs
from warren_engine.pool.cancel_memory import CancelMemory
from warren_engine.pool.metrics import EngineMetrics
from warren_engine.pool.node_capacity import Node

log = structlog.get_logger(__name__)

PARENT_POLL_SECONDS = 0.5
PR_SET_PDEATHSIG = 1
HTTP_PORT_FILE = "http-port"  # in the state directory: the port the gateway last served on
CONTROL_QUEUE_EXPIRY_MS = 10_000


class Engine:
    def __init__(
        self,
        config: Settings,
        *,
        run_id: str | None = None,
        parent_pid: int | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = config
        # What this node offers, from the settings: a bad WARREN_GPUS fails here, at start.
        self.node = Node.from_settings(config)
        self.name = node_name(config.node_name)
        self.environments = config.engine_environments or (config.environment,)
        self.run_id = run_id
        self.control_queues = (
            [naming.control_queue(self.environments[0], run_id)]
            if run_id is not None
            else [naming.control_queue(environment) for environment in self.environments]
        )
        self.parent_pid = parent_pid
        self._owns_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="warren-engine-"))
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        _keep_engine_credentials_from_containers(self.settings)
        await asyncio.to_thread(procs.warm_up)
        connection = await broker_urls.connect_robust(
            self.settings.broker_url,
            reconnect_interval=RECONNECT_INTERVAL,
            # Its slot tokens go back to the broker soon if this node is cut off from it;
            # each attempt to come back gives up in time (a partition drops the SYNs).
            heartbeat=NODE_HEARTBEAT_SECONDS,
            timeout=CONNECT_TIMEOUT,
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
        queues = await self._declare_queues(channel)
        # The gateway and the node's questions to its peers go through the broker like
        # any client's.
        client = await Client(self.settings).open()
        stack.push_async_callback(client.close)
        cancel_memory = CancelMemory()
        publisher = await connection.channel(publisher_confirms=True)
        cluster = self._cluster(connection, publisher)
        registry = AppRegistry(
            self.settings,
            connection,
            channel,
            publisher,
            self.state_dir,
            cancel_memory,
            SecretStore(self.state_dir),
            cluster,
            EngineMetrics(self.name),
        )
        changes = AppChanges(registry, cluster)
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
        await registry.start()  # reads the registries: the deployed apps come back
        stack.push_async_callback(registry.shutdown)
        stack.push_async_callback(changes.leave)
        seals = registry.signer
        cancels = CancelListener(channel, seals, cancel_memory)
        if self.run_id is None:  # an app run's engine listens when its app comes, whose
            # caller then hears of a queue that cannot be declared
            for environment in self.environments:
                await registry.prepare(environment)  # what the listener binds to
                await cancels.listen(environment)
        control = ControlPlane(registry, changes, cancels, gateway, channel, seals, client)
        stack.callback(log.info, "engine_stopping")
        queues += await self._declare_shared(channel)
        for queue in queues:
            await queue.consume(control.on_message)
        health.consuming()
        names = [queue.name for queue in queues]
        log.info("engine_started", node=self.name, control_queues=names, pid=os.getpid())
        sys.stdout.write(f"READY {' '.join(names)}\n")
        sys.stdout.flush()
        os.dup2(2, 1)  # nothing more for whoever reads our stdout: keep it from filling up
        await self._run_until_stopped(changes)

    async def _declare_queues(self, channel: AbstractRobustChannel) -> list[AbstractQueue]:
        """The control queues this node takes requests from (its own one first, exclusive:
        a second node of the same name, or of the same run, is refused)."""
        own = self.control_queues[0] if self.run_id is not None else naming.node_queue(self.name)
        try:
            queues: list[AbstractQueue] = [await channel.declare_queue(own, exclusive=True)]
        except ChannelLockedResource:
            raise exceptions.EngineError(
                f"another engine already listens on {own!r} (give each node its own --node-name)"
            ) from None
        return queues

    async def _declare_shared(self, channel: AbstractRobustChannel) -> list[AbstractQueue]:
        """The environments' control queues, shared with their other nodes: declared just
        before they are consumed, as a queue nobody consumes would swallow requests. Each
        goes with its last consumer (auto-delete), or once unused for a while if no
        consumer ever came (a node killed in between)."""
        if self.run_id is not None:
            return []
        return [
            await channel.declare_queue(
                name, auto_delete=True, arguments={"x-expires": CONTROL_QUEUE_EXPIRY_MS}
            )
            for name in self.control_queues
        ]

    def _cluster(
        self, connection: AbstractRobustConnection, publisher: AbstractRobustChannel
    ) -> Cluster:
        if self.run_id is not None:
            return Cluster.alone(self.name, self.environments, self.node)
        return Cluster.of_peers(
            self.name,
            self.environments,
            self.node,
            connection,
            publisher,
            signer(self.settings),
            self.settings.queue_type,
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
            local_node=self.name,
            base_url=base_url,
            dead_letters=registry.dead_letters.list,
        )

    async def _run_until_stopped(self, changes: AppChanges) -> None:
        watchers = [asyncio.create_task(changes.watch_leases())]
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


def node_name(configured: str | None) -> str:
    """This node's name: as configured, else the host's name and this process's id (two
    nodes on one machine must differ)."""
    name = configured or f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
    return naming.check_part("node name", name)


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
