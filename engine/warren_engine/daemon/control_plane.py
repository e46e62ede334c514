"""The control plane: an engine's answers to control requests.

Each operation of :mod:`warren.wire.control` has one handler here, found through a
table built when the control plane is made; an error a handler raises goes back to the
caller by name (a :mod:`warren.exceptions` class), any other as ``EngineError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from warren import exceptions
from warren.wire.codec import Envelope
from warren.wire.control import (
    REQUESTS,
    AppDeployed,
    AppListing,
    AppRegistered,
    AppStatus,
    AppStopped,
    AutoscalerSettings,
    ContainerInfo,
    ContainerListing,
    CreateSecret,
    DeadInputDetail,
    DeadInputListing,
    DeadInputRetried,
    DeadInputsPurged,
    DeleteSecret,
    DeployApp,
    DescribeFunction,
    Done,
    DropPool,
    EnsureVariant,
    FunctionDescription,
    FunctionStats,
    GetAppStatus,
    GetPoolStats,
    HostPool,
    JoinNode,
    ListApps,
    ListContainers,
    ListDeadInputs,
    ListNodes,
    ListSecrets,
    NodeListing,
    PoolStats,
    PurgeDeadInputs,
    RegisterApp,
    Request,
    RetryDeadInput,
    SecretListing,
    ShowDeadInput,
    StopApp,
    StopContainer,
    UpdateAutoscaler,
    UpdatePool,
    VariantDescription,
    decode_request,
    encode_failure,
    encode_reply,
)
from warren.wire.protocol import KIND_CONTROL
from warren.wire.signing import CONTROL_MAX_SIZE, Signer

from warren_engine.daemon.app_registry import AppRegistry
from warren_engine.daemon.cancel_listener import CancelListener
from warren_engine.daemon.gateway import Gateway
from warren_engine.daemon.secret_store import redacted
from warren_engine.nodes.agent import AgentPools
from warren_engine.nodes.primary import PRIMARY_NODE
from warren_engine.publisher import BROKER_ERRORS

log = structlog.get_logger(__name__)

# A handler takes the request of its table entry's class and returns that class's reply.
Handler = Callable[[Any], Awaitable[object]]


class ControlPlane:
    def __init__(
        self,
        registry: AppRegistry,
        cancels: CancelListener,
        gateway: Gateway,
        channel: AbstractRobustChannel,
        signer: Signer,
        agent: AgentPools | None,
    ) -> None:
        self._registry = registry
        self._cancels = cancels
        self._gateway = gateway
        self._channel = channel
        self._signer = signer
        self._agent = agent
        # Agents being sent their pools, one pass at a time per agent (by name).
        self._rehosting: dict[str, asyncio.Task[None]] = {}
        self._handlers: dict[type[Request[Any]], Handler] = {
            RegisterApp: self._register_app,
            DeployApp: self._deploy_app,
            StopApp: self._stop_app,
            ListApps: self._list_apps,
            GetAppStatus: self._app_status,
            DescribeFunction: self._describe_function,
            EnsureVariant: self._ensure_variant,
            FunctionStats: self._function_stats,
            ListContainers: self._list_containers,
            StopContainer: self._stop_container,
            UpdateAutoscaler: self._update_autoscaler,
            CreateSecret: self._create_secret,
            ListSecrets: self._list_secrets,
            DeleteSecret: self._delete_secret,
            JoinNode: self._join_node,
            ListNodes: self._list_nodes,
            HostPool: self._host_pool,
            DropPool: self._drop_pool,
            GetPoolStats: self._pool_stats,
            UpdatePool: self._update_pool,
            ListDeadInputs: self._list_dead_inputs,
            ShowDeadInput: self._show_dead_input,
            RetryDeadInput: self._retry_dead_input,
            PurgeDeadInputs: self._purge_dead_inputs,
        }
        unhandled = set(REQUESTS.values()) - set(self._handlers)
        if unhandled:
            raise TypeError(f"control operations without a handler: {sorted(map(str, unhandled))}")

    async def close(self) -> None:
        for task in self._rehosting.values():
            task.cancel()
        await asyncio.gather(*self._rehosting.values(), return_exceptions=True)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        # Acknowledged at once: a request may take long (stopping an app waits for its
        # containers), longer than the broker lets a delivery stay unacknowledged, and
        # a redelivered request would run twice. The caller times out if we die.
        with contextlib.suppress(*BROKER_ERRORS):
            await message.ack()
        reply = await self._answer(message)
        if not message.reply_to:
            return
        try:
            await self._channel.default_exchange.publish(
                aio_pika.Message(
                    self._signer.seal(reply, correlation_id=message.correlation_id),
                    correlation_id=message.correlation_id,
                    type="control_reply",
                ),
                routing_key=message.reply_to,
            )
        except BROKER_ERRORS as exc:  # the caller's own timeout tells it
            log.warning("control_reply_not_sent", reason=f"{type(exc).__name__}: {exc}")

    async def _answer(self, message: AbstractIncomingMessage) -> Envelope:
        try:
            envelope = self._signer.open_message(
                message, max_size=CONTROL_MAX_SIZE, kind=KIND_CONTROL
            )
            request = decode_request(envelope.body)
            return encode_reply(await self._handlers[type(request)](request))
        except exceptions.WarrenError as exc:
            return encode_failure(type(exc).__name__, str(exc))
        except Exception as exc:
            log.exception("control_failed")
            return encode_failure("EngineError", f"{type(exc).__name__}: {exc}")

    @property
    def _web_base(self) -> str:
        return self._gateway.base_url

    # -- apps --------------------------------------------------------------------------

    async def _register_app(self, request: RegisterApp) -> AppRegistered:
        app = await self._registry.register(request.bundle, ephemeral=True, lease=request.lease)
        await self._cancels.listen(app.environment)
        return AppRegistered(app.instance, self._web_base)

    async def _deploy_app(self, request: DeployApp) -> AppDeployed:
        app = await self._registry.register(request.bundle, ephemeral=False)
        await self._cancels.listen(app.environment)
        return AppDeployed(await self._registry.status(app), self._web_base)

    async def _stop_app(self, request: StopApp) -> AppStopped:
        app = self._registry.find(request.environment, request.instance)
        return AppStopped(await self._registry.stop(app.environment, app.instance))

    async def _list_apps(self, request: ListApps) -> AppListing:
        return AppListing(await self._registry.statuses(request.environment))

    async def _app_status(self, request: GetAppStatus) -> AppStatus:
        return await self._registry.status(
            self._registry.find(request.environment, request.instance)
        )

    async def _describe_function(self, request: DescribeFunction) -> FunctionDescription:
        app = self._registry.find(request.environment, request.app, request.tag)
        spec = redacted(app.specs[request.tag])
        return FunctionDescription(app.instance, spec, self._web_base)

    async def _ensure_variant(self, request: EnsureVariant) -> VariantDescription:
        app = self._registry.find(request.environment, request.instance, request.tag)
        spec = await self._registry.ensure_variant(app, request.tag, dict(request.options))
        return VariantDescription(app.instance, redacted(spec))

    async def _function_stats(self, request: FunctionStats) -> PoolStats:
        app, key = self._registry.find_pool(request.pool)
        return await self._registry.pool_stats(app, key)

    @property
    def _node_name(self) -> str:
        return self._agent.name if self._agent is not None else PRIMARY_NODE

    async def _list_containers(self, request: ListContainers) -> ContainerListing:
        return await self._registry.containers(request.environment, request.app, self._node_name)

    async def _stop_container(self, request: StopContainer) -> ContainerInfo:
        return await self._registry.stop_container(
            request.environment, request.container, self._node_name
        )

    async def _update_autoscaler(self, request: UpdateAutoscaler) -> AutoscalerSettings:
        app, key = self._registry.find_pool(request.pool)
        settings = await self._registry.update_autoscaler(app, key, request.changes)
        return settings.to_settings()

    # -- secrets -----------------------------------------------------------------------

    async def _create_secret(self, request: CreateSecret) -> Done:
        self._registry.secrets.put(request.environment, request.name, dict(request.values))
        log.info("secret_stored", environment=request.environment, name=request.name)
        return Done()

    async def _list_secrets(self, request: ListSecrets) -> SecretListing:
        return SecretListing(self._registry.secrets.listing(request.environment))

    async def _delete_secret(self, request: DeleteSecret) -> Done:
        self._registry.secrets.delete(request.environment, request.name)
        return Done()

    # -- dead-lettered inputs (warren_engine.daemon.dead_letters) -------------------------

    async def _list_dead_inputs(self, request: ListDeadInputs) -> DeadInputListing:
        return await self._registry.dead_letters.list(request.environment, request.limit)

    async def _show_dead_input(self, request: ShowDeadInput) -> DeadInputDetail:
        return await self._registry.dead_letters.show(request.environment, request.id)

    async def _retry_dead_input(self, request: RetryDeadInput) -> DeadInputRetried:
        return await self._registry.dead_letters.retry(request.environment, request.id)

    async def _purge_dead_inputs(self, request: PurgeDeadInputs) -> DeadInputsPurged:
        return DeadInputsPurged(await self._registry.dead_letters.purge(request.environment))

    # -- several nodes (warren_engine.nodes) ---------------------------------------------

    async def _join_node(self, request: JoinNode) -> Done:
        """An agent's heartbeat: answered at once; pools it lacks are sent in the background,
        one pass at a time per agent."""
        agent = self._registry.nodes.joined(request)
        if agent.name not in self._rehosting:
            task = asyncio.create_task(self._registry.rehost(agent.name, set(agent.pools)))
            self._rehosting[agent.name] = task
            task.add_done_callback(lambda _: self._rehosting.pop(agent.name, None))
        return Done()

    async def _list_nodes(self, request: ListNodes) -> NodeListing:
        return NodeListing(self._registry.nodes.listing())

    def _agent_pools(self) -> AgentPools:
        if self._agent is None:
            raise exceptions.InvalidError("this engine is not an agent node (warren engine --join)")
        return self._agent

    async def _host_pool(self, request: HostPool) -> Done:
        agent = self._agent_pools()
        await self._cancels.listen(request.pool.environment)
        await agent.host_pool(request)
        return Done()

    async def _drop_pool(self, request: DropPool) -> Done:
        await self._agent_pools().drop_pool(request)
        return Done()

    async def _pool_stats(self, request: GetPoolStats) -> PoolStats:
        return await self._agent_pools().pool_stats(request)

    async def _update_pool(self, request: UpdatePool) -> Done:
        self._agent_pools().update_pool(request)
        return Done()
