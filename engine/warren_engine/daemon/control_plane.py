"""The control plane: an engine's answers to control requests.

Each operation of :mod:`warren.wire.control` has one handler here, found through a
table built when the control plane is made; an error a handler raises goes back to the
caller by name (a :mod:`warren.exceptions` class), any other as ``EngineError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel
from warren import exceptions
from warren.client.connection import Client
from warren.wire import naming
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
    EnsureVariant,
    FunctionDescription,
    FunctionStats,
    GetAppStatus,
    ListApps,
    ListContainers,
    ListDeadInputs,
    ListNodes,
    ListSecrets,
    NodeInfo,
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
    VariantDescription,
    decode_request,
    encode_failure,
    encode_reply,
)
from warren.wire.protocol import KIND_CONTROL
from warren.wire.signing import CONTROL_MAX_SIZE, Signer

from warren_engine.daemon.app_changes import AppChanges
from warren_engine.daemon.app_registry import AppRegistry
from warren_engine.daemon.cancel_listener import CancelListener
from warren_engine.daemon.gateway import Gateway
from warren_engine.daemon.secret_store import redacted
from warren_engine.publisher import BROKER_ERRORS

PEER_TIMEOUT = 10.0  # a peer asked for its containers answers from memory

log = structlog.get_logger(__name__)

# A handler takes the request of its table entry's class and returns that class's reply.
Handler = Callable[[Any], Awaitable[object]]


class ControlPlane:
    def __init__(
        self,
        registry: AppRegistry,
        changes: AppChanges,
        cancels: CancelListener,
        gateway: Gateway,
        channel: AbstractRobustChannel,
        signer: Signer,
        client: Client,
    ) -> None:
        self._registry = registry
        self._changes = changes
        self._cluster = registry.cluster
        self._cancels = cancels
        self._gateway = gateway
        self._channel = channel
        self._signer = signer
        self._client = client  # to ask peers for their containers
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
            ListNodes: self._list_nodes,
            ListDeadInputs: self._list_dead_inputs,
            ShowDeadInput: self._show_dead_input,
            RetryDeadInput: self._retry_dead_input,
            PurgeDeadInputs: self._purge_dead_inputs,
        }
        unhandled = set(REQUESTS.values()) - set(self._handlers)
        if unhandled:
            raise TypeError(f"control operations without a handler: {sorted(map(str, unhandled))}")

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
        app = await self._changes.register(request.bundle, ephemeral=True, lease=request.lease)
        await self._cancels.listen(app.environment)
        return AppRegistered(app.instance, self._web_base)

    async def _deploy_app(self, request: DeployApp) -> AppDeployed:
        app = await self._changes.register(request.bundle, ephemeral=False)
        await self._cancels.listen(app.environment)
        return AppDeployed(await self._registry.status(app), self._web_base)

    async def _stop_app(self, request: StopApp) -> AppStopped:
        app = self._registry.find(request.environment, request.instance)
        return AppStopped(await self._changes.stop(app.environment, app.instance))

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
        spec = await self._changes.ensure_variant(app, request.tag, dict(request.options))
        return VariantDescription(app.instance, redacted(spec))

    async def _function_stats(self, request: FunctionStats) -> PoolStats:
        app, key = self._registry.find_pool(request.pool)
        return await self._registry.pool_stats(app, key)

    async def _list_containers(self, request: ListContainers) -> ContainerListing:
        """This node's containers, and (asked by a client) every live peer's."""
        here = self._registry.containers(request.environment, request.app)
        if request.here_only:
            return here
        found, errors = list(here.containers), []
        for peer in self._peers(request.environment):
            asked = dataclasses.replace(request, here_only=True)
            try:
                listing = await self._ask(peer, asked)
            except exceptions.NotFoundError:
                continue  # it runs nothing of that app
            except exceptions.WarrenError as exc:
                errors.append(f"node {peer}: {type(exc).__name__}: {exc}")
                continue
            found.extend(listing.containers)
        if request.app is not None and not found and not errors:
            raise exceptions.NotFoundError(
                f"no app {request.app!r} runs in environment {request.environment!r}"
            )
        found.sort(key=lambda info: (info.app, info.function, info.node, -info.uptime))
        return ContainerListing(tuple(found), tuple(errors))

    async def _stop_container(self, request: StopContainer) -> ContainerInfo:
        info = self._registry.stop_container(request.environment, request.container)
        if info is not None:
            return info
        unasked = []
        if not request.here_only:
            for peer in self._peers(request.environment):
                try:
                    found: ContainerInfo = await self._ask(
                        peer, dataclasses.replace(request, here_only=True)
                    )
                    return found
                except exceptions.NotFoundError:
                    continue
                except exceptions.WarrenError as exc:
                    unasked.append(f"node {peer}: {type(exc).__name__}: {exc}")
        unreachable = f"; could not ask {', '.join(unasked)}" if unasked else ""
        raise exceptions.NotFoundError(
            f"no container {request.container!r} runs in environment {request.environment!r} "
            f"(warren container list shows their ids){unreachable}"
        )

    def _peers(self, environment: str) -> list[str]:
        return [
            beat.name
            for beat in self._cluster.membership.others()
            if environment in beat.environments
        ]

    async def _ask(self, peer: str, request: Any) -> Any:
        return await self._client.control(
            request, queue=naming.node_queue(peer), timeout=PEER_TIMEOUT
        )

    async def _update_autoscaler(self, request: UpdateAutoscaler) -> AutoscalerSettings:
        app, key = self._registry.find_pool(request.pool)
        settings = await self._changes.update_autoscaler(app, key, request.changes)
        return settings.to_settings()

    # -- secrets -----------------------------------------------------------------------

    async def _create_secret(self, request: CreateSecret) -> Done:
        await self._changes.put_secret(request.environment, request.name, dict(request.values))
        return Done()

    async def _list_secrets(self, request: ListSecrets) -> SecretListing:
        return SecretListing(self._registry.secrets.listing(request.environment))

    async def _delete_secret(self, request: DeleteSecret) -> Done:
        await self._changes.delete_secret(request.environment, request.name)
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

    # -- the engine nodes --------------------------------------------------------------

    async def _list_nodes(self, request: ListNodes) -> NodeListing:
        nodes = [
            NodeInfo(
                beat.name,
                beat.offer,
                alive=True,
                pools=len(beat.pools),
                environments=beat.environments,
                leads=beat.leads,
            )
            for beat in self._cluster.membership.nodes()
            if request.environment is None or request.environment in beat.environments
        ]
        return NodeListing(tuple(nodes))
