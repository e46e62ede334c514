"""The engine daemon: answers control requests and hosts apps.

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
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from aiormq.exceptions import ChannelLockedResource
from warren import exceptions
from warren.client.connection import Client
from warren.config import RECONNECT_INTERVAL, Settings
from warren.wire import naming, topology
from warren.wire.protocol import KIND_CANCEL, KIND_CONTROL, Cancel, ControlReply, ControlRequest
from warren.wire.signing import CONTROL_MAX_SIZE, signer

from warren_engine.daemon.apps import Host
from warren_engine.daemon.cancel_memory import CancelMemory
from warren_engine.daemon.failed_inputs import answer_orphan
from warren_engine.daemon.gateway import Gateway
from warren_engine.daemon.hosted_app import HostedApp, pool_key
from warren_engine.daemon.secret_store import redacted
from warren_engine.nodes.agent import AgentPools
from warren_engine.nodes.primary import RemotePools
from warren_engine.pool import processes as procs
from warren_engine.publisher import BROKER_ERRORS

log = structlog.get_logger(__name__)

PARENT_POLL_SECONDS = 0.5
AGENT_TIMEOUT = 120.0  # placing a pool starts containers, which may import a lot
PR_SET_PDEATHSIG = 1


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
        # An agent node (``join`` is its name) listens on a queue of its own.
        self.join = join
        self.control_queue = naming.node_queue(join) if join else naming.control_queue(run_id)
        self._agent: AgentPools | None = None
        self._rehosting: dict[str, asyncio.Task[None]] = {}
        self.parent_pid = parent_pid
        self._owns_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="warren-engine-"))
        self.cancels = CancelMemory()
        self._stop = asyncio.Event()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._host: Host | None = None
        self._client: Client | None = None
        self._gateway: Gateway | None = None
        self._listening: set[str] = set()
        self._listener_id = f"engine-{uuid.uuid4().hex[:12]}"
        self._signer = signer(config)

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        _keep_engine_credentials_from_containers(self.settings)
        await asyncio.to_thread(procs.warm_up)
        self._connection = await aio_pika.connect_robust(
            self.settings.broker_url,
            reconnect_interval=RECONNECT_INTERVAL,
            client_properties={"connection_name": "warren-engine"},
        )
        self._channel = await self._connection.channel()
        assert self._channel is not None
        try:
            queue = await self._channel.declare_queue(self.control_queue, exclusive=True)
        except ChannelLockedResource:
            raise exceptions.EngineError(
                f"another engine already listens on {self.control_queue!r}"
            ) from None
        self._host = Host(
            self.settings, self._connection, self._channel, self.state_dir, self.cancels
        )
        # The gateway calls web endpoints through the broker like any client.
        self._client = await Client(self.settings).open()
        self._gateway = Gateway(
            self._host,
            self._client,
            self.settings.http_host,
            self.settings.http_port,
            self.settings.public_url,
            debug=self.settings.http_debug,
        )
        await self._gateway.start()
        self._host.remote = RemotePools(self._host.nodes, self._tell_agent)
        if self.join:
            self._agent = AgentPools(self._host, self.join)
        else:
            await self._host.restore()
        for environment, _ in self._host.apps:
            await self._listen_for_cancels(environment)
        await queue.consume(self._on_control)
        log.info("engine_started", control_queue=self.control_queue, pid=os.getpid())
        sys.stdout.write(f"READY {self.control_queue}\n")
        sys.stdout.flush()
        os.dup2(2, 1)  # nothing more for whoever reads our stdout: keep it from filling up
        watchers = [asyncio.create_task(self._host.watch_leases())]
        if self._agent is not None:
            watchers.append(asyncio.create_task(self._agent.keep_joining(self._client)))
        if self.parent_pid:
            watchers.append(asyncio.create_task(self._watch_parent()))
        try:
            await self._stop.wait()
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await self._shutdown()

    async def _shutdown(self) -> None:
        log.info("engine_stopping")
        for task in list(self._rehosting.values()):
            task.cancel()
        await asyncio.gather(*self._rehosting.values(), return_exceptions=True)
        if self._gateway is not None:
            await self._gateway.close()
        if self._host is not None:
            await self._host.shutdown()
        if self._client is not None:
            await self._client.close()
        leftovers = procs.kill_leftovers()
        if leftovers:
            log.error("containers_left_running_were_killed", pids=leftovers)
        if self._connection is not None:
            await self._connection.close()
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        log.info("engine_stopped")

    async def _watch_parent(self) -> None:
        _signal_when_parent_dies()
        while os.getppid() == self.parent_pid:
            await asyncio.sleep(PARENT_POLL_SECONDS)
        log.warning("engine_orphaned", parent=self.parent_pid)
        self._stop.set()

    async def _listen_for_cancels(self, environment: str) -> None:
        """Cancel broadcasts, and the environment's orphaned retries (to answer them)."""
        if environment in self._listening or self._channel is None:
            return
        await topology.subscribe_to_cancels(
            self._channel, environment, self._listener_id, self._on_cancel
        )
        channel = self._channel
        orphans = await channel.get_queue(naming.orphans(environment), ensure=True)
        await orphans.consume(lambda message: answer_orphan(channel, message, self._signer))
        self._listening.add(environment)

    async def _on_cancel(self, message: AbstractIncomingMessage) -> None:
        try:
            cancel = Cancel.from_body(self._signer.open_message(message, kind=KIND_CANCEL).body)
            self.cancels.add(cancel.invocation_ids)
        except exceptions.WarrenError as exc:
            log.warning("cancel_rejected", reason=str(exc))

    # -- control requests ------------------------------------------------------------

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        # Acknowledged at once: a request may take long (stopping an app waits for its
        # containers), longer than the broker lets a delivery stay unacknowledged, and
        # a redelivered request would run twice. The caller times out if we die.
        with contextlib.suppress(*BROKER_ERRORS):
            await message.ack()
        try:
            envelope = self._signer.open_message(
                message, max_size=CONTROL_MAX_SIZE, kind=KIND_CONTROL
            )
            request = ControlRequest.from_body(envelope.body)
            handler = getattr(self, f"_op_{request.op}", None)
            if handler is None:
                raise exceptions.InvalidError(f"unknown control operation {request.op!r}")
            reply = ControlReply(True, await handler(request.args))
        except exceptions.WarrenError as exc:
            reply = ControlReply(False, error=type(exc).__name__, message=str(exc))
        except Exception as exc:
            log.exception("control_failed")
            reply = ControlReply(False, error="EngineError", message=f"{type(exc).__name__}: {exc}")
        if message.reply_to and self._channel is not None:
            try:
                await self._channel.default_exchange.publish(
                    aio_pika.Message(
                        self._signer.seal(
                            reply.to_envelope(), correlation_id=message.correlation_id
                        ),
                        correlation_id=message.correlation_id,
                        type="control_reply",
                    ),
                    routing_key=message.reply_to,
                )
            except BROKER_ERRORS as exc:  # the caller's own timeout tells it
                log.warning("control_reply_not_sent", reason=f"{type(exc).__name__}: {exc}")

    @property
    def host(self) -> Host:
        assert self._host is not None
        return self._host

    def _find(self, args: dict[str, Any], *, with_tag: bool = False) -> HostedApp:
        environment = naming.check_part("environment", args.get("environment", ""))
        name = args.get("instance") or args.get("app") or ""
        tag = args.get("tag") if with_tag else None
        return self.host.find(environment, name, tag)

    async def _tell_agent(self, op: str, args: dict[str, Any], queue: str) -> dict[str, Any]:
        assert self._client is not None
        return await self._client.control(op, args, queue=queue, timeout=AGENT_TIMEOUT)

    # -- several nodes (warren_engine.nodes) --------------------------------------------

    async def _op_join_node(self, args: dict[str, Any]) -> dict[str, Any]:
        """An agent's heartbeat: answered at once; pools it lacks are sent in the background,
        one pass at a time per agent."""
        agent = self.host.nodes.joined(args)
        if agent.name not in self._rehosting:
            apps = list(self.host.apps.values())
            task = asyncio.create_task(
                self.host.remote.rehost(apps, agent.name, agent.pools, self.host.environ)
            )
            self._rehosting[agent.name] = task
            task.add_done_callback(lambda _: self._rehosting.pop(agent.name, None))
        return {}

    async def _op_list_nodes(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"nodes": self.host.nodes.listing()}

    def _agent_pools(self) -> AgentPools:
        if self._agent is None:
            raise exceptions.InvalidError("this engine is not an agent node (warren engine --join)")
        return self._agent

    async def _op_host_pool(self, args: dict[str, Any]) -> dict[str, Any]:
        await self._listen_for_cancels(args["environment"])
        return await self._agent_pools().host_pool(args)

    async def _op_drop_pool(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._agent_pools().drop_pool(args)

    async def _op_pool_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._agent_pools().pool_stats(args)

    async def _op_update_pool(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self._agent_pools().update_pool(args)

    async def _op_ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "apps": len(self.host.apps)}

    @property
    def web_base(self) -> str:
        return self._gateway.base_url if self._gateway is not None else ""

    async def _op_register_app(self, args: dict[str, Any]) -> dict[str, Any]:
        app = await self.host.register(args, ephemeral=True)
        await self._listen_for_cancels(app.environment)
        return {"instance": app.instance, "web_base": self.web_base}

    async def _op_deploy_app(self, args: dict[str, Any]) -> dict[str, Any]:
        app = await self.host.register(args, ephemeral=False)
        await self._listen_for_cancels(app.environment)
        return {**(await self.host.status(app)), "web_base": self.web_base}

    async def _op_stop_app(self, args: dict[str, Any]) -> dict[str, Any]:
        app = self._find(args)
        return {"inputs_answered": await self.host.stop(app.environment, app.instance)}

    async def _op_list_apps(self, args: dict[str, Any]) -> dict[str, Any]:
        environment = args.get("environment")
        apps = [
            await self.host.status(app)
            for (env, _), app in sorted(self.host.apps.items())
            if environment is None or env == environment
        ]
        return {"apps": apps}

    async def _op_app_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self.host.status(self._find(args))

    async def _op_describe_function(self, args: dict[str, Any]) -> dict[str, Any]:
        app = self._find(args, with_tag=True)
        spec = redacted(app.specs[args["tag"]])
        return {"instance": app.instance, "spec": spec, "web_base": self.web_base}

    def _find_pool(self, args: dict[str, Any]) -> tuple[HostedApp, str]:
        """The app and pool key a request names (a function, or one of its variants)."""
        app = self._find(args, with_tag=True)
        key = pool_key(args["tag"], args.get("variant"))
        if key not in app.pools and key not in app.remote:
            raise exceptions.NotFoundError(
                f"{app.app}.{args['tag']} has no variant {args.get('variant')!r} (any more): "
                "it was reset by a redeploy; use with_options again"
            )
        return app, key

    async def _op_ensure_variant(self, args: dict[str, Any]) -> dict[str, Any]:
        app = self._find(args, with_tag=True)
        spec = await self.host.ensure_variant(app, args["tag"], dict(args["options"]))
        return {"instance": app.instance, "spec": redacted(spec)}

    async def _op_create_secret(self, args: dict[str, Any]) -> dict[str, Any]:
        self.host.secrets.put(args["environment"], args["name"], dict(args["values"]))
        log.info("secret_stored", environment=args["environment"], name=args["name"])
        return {}

    async def _op_list_secrets(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"secrets": self.host.secrets.listing(args["environment"])}

    async def _op_delete_secret(self, args: dict[str, Any]) -> dict[str, Any]:
        self.host.secrets.delete(args["environment"], args["name"])
        return {}

    async def _op_function_stats(self, args: dict[str, Any]) -> dict[str, Any]:
        app, key = self._find_pool(args)
        return await self.host.pool_stats(app, key)

    async def _op_update_autoscaler(self, args: dict[str, Any]) -> dict[str, Any]:
        app, key = self._find_pool(args)
        settings = await self.host.update_autoscaler(app, key, dict(args["changes"]))
        return settings.to_wire()


def _keep_engine_credentials_from_containers(config: Settings) -> None:
    """Containers are forked from a server started after this: with its own container
    user configured, the engine's credentials must not be in their environment.

    Functions that call other functions find ``WARREN_BROKER_URL`` there: the value of
    ``WARREN_FUNCTION_BROKER_URL`` (a caller's rights) if set, else the container URL.
    Written for the containers' code only: the engine itself keeps ``config``.
    """
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
