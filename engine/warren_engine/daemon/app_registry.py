"""The app registry: the apps an engine hosts, their queues, their pools, their records.

It is the one owner of :class:`~warren_engine.daemon.hosted_app.HostedApp` state: the
control plane, the gateway and the node code ask it, and it alone changes an app.

An app is *ephemeral* (``app.run()``: its queues carry a run id and go when it stops)
or *deployed* (``warren deploy``/``app.deploy()``: its queues carry the app's name,
its record is kept on disk, and it comes back when the engine restarts). Stopping an
app answers the inputs still queued with an error and deletes its queues, so a later
call fails fast with not-found. A redeploy starts the new code's containers, then
stops the old ones (they finish what they run), removes the queues of functions the
new code no longer has, and resets ``update_autoscaler`` overrides.

A function is refused at registration when this engine cannot run it: its timeout
is past the broker's (see :mod:`warren_engine.daemon.hosted_app`), a secret or volume it
names does not
exist, or the node lacks the GPUs, labels or capacity it asks for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from warren import exceptions
from warren.config import Settings
from warren.wire import naming, topology
from warren.wire.code_bundle import check_python
from warren.wire.control import (
    AppBundle,
    AppStatus,
    AutoscalerChanges,
    ContainerInfo,
    ContainerListing,
    HostPool,
    ListContainers,
    PlacedPool,
    PoolName,
    PoolStats,
    StopContainer,
)
from warren.wire.signing import signer
from warren.wire.spec import FunctionSpec

from warren_engine.container.container import FunctionConfig
from warren_engine.daemon.container_environment import Provisions
from warren_engine.daemon.dead_letters import DeadLetters
from warren_engine.daemon.failed_inputs import answer_queued
from warren_engine.daemon.hosted_app import (
    HostedApp,
    check_timeouts,
    merged_changes,
    pool_key,
    specs_by_key,
    with_changes,
)
from warren_engine.daemon.leases import watch_leases
from warren_engine.daemon.records import AppRecords
from warren_engine.daemon.secret_store import SecretStore
from warren_engine.nodes.primary import Nodes, RemotePools, placed_pool
from warren_engine.pool.autoscaler import Autoscaling
from warren_engine.pool.cancel_memory import CancelMemory
from warren_engine.pool.cores import CorePlacement
from warren_engine.pool.failure_log import FailureLog
from warren_engine.pool.metrics import EngineMetrics
from warren_engine.pool.node_capacity import Node
from warren_engine.pool.pool import ContainerPool
from warren_engine.publisher import Republisher
from warren_engine.queue_probe import QueueProbe

log = structlog.get_logger(__name__)

# How many containers a new pool starts with, by pool key.
Warm = Callable[[str], int]


class AppRegistry:
    def __init__(
        self,
        settings: Settings,
        connection: AbstractRobustConnection,
        channel: AbstractRobustChannel,
        publisher: AbstractRobustChannel,
        state_dir: Path,
        cancels: CancelMemory,
        secrets: SecretStore,
        nodes: Nodes,
        remote: RemotePools,
        metrics: EngineMetrics,
    ) -> None:
        self.settings = settings
        self.signer = signer(settings)
        self._connection = connection
        self._channel = channel
        # Shared by the pools' republishers: a channel with publisher confirms.
        self._publisher = publisher
        self.state_dir = state_dir
        self._records = AppRecords(state_dir)
        self.secrets = secrets
        self.nodes = nodes
        self.node: Node = nodes.local
        self._cores = CorePlacement()
        self._provisions = Provisions(state_dir, secrets, self.node)
        self.environ = self._provisions.environ
        self._remote = remote
        self._cancels = cancels
        self._apps: dict[tuple[str, str], HostedApp] = {}
        self._lock = asyncio.Lock()
        self._probe = QueueProbe(connection)
        self.metrics = metrics  # every pool's series, which the gateway serves
        # The environments' dead-letter queues; a retry goes to the queues these apps have now.
        self.dead_letters = DeadLetters(connection, self.signer, self.current_queue)

    # -- registering and stopping ----------------------------------------------------------

    async def register(
        self, bundle: AppBundle, *, ephemeral: bool, lease: str | None = None
    ) -> HostedApp:
        check_python(bundle.code)
        environment = naming.check_part("environment", bundle.environment)
        app_name = naming.check_part("app name", bundle.app)
        instance = naming.check_part("app instance", bundle.instance if ephemeral else app_name)
        specs = specs_by_key(bundle.functions)
        self._check(environment, specs)
        if ephemeral:
            code_path = self.state_dir / "runs" / environment / instance / "code.msgpack"
            code_path.parent.mkdir(parents=True, exist_ok=True)
            code_path.write_bytes(bundle.code)
        else:
            code_path = self._records.save_code(environment, app_name, bundle.code)
        app = HostedApp(
            environment,
            app_name,
            instance,
            specs,
            code_path,
            ephemeral,
            bundle.sys_path,
            lease=lease if ephemeral else None,
        )
        async with self._lock:
            previous = self._apps.get((environment, instance))
            try:
                await self._start(app, self._warm(app, at_least=1))
            except BaseException:
                await self._discard_queues(app, keep=set(previous.specs) if previous else set())
                raise
            if previous is not None:
                await self._replace(previous, app)
            if not ephemeral:
                self._records.save(app.record())
                self._records.prune_code(environment, app_name, keep=code_path)
            self._apps[(environment, instance)] = app
        log.info("app_registered", app=app_name, instance=instance, ephemeral=ephemeral)
        return app

    async def restore(self) -> None:
        """Bring back the deployed apps recorded on disk (after an engine restart)."""
        for record in self._records.load_all():
            app = HostedApp.restored(record, self._records.code_path(record))
            environment, name = app.environment, app.app
            try:
                self._check(environment, app.specs, placing=False)  # agents may not have joined
                await self._start(app, self._warm(app, at_least=0), restoring=True)
            except exceptions.WarrenError as exc:
                log.error("app_not_restored", app=name, environment=environment, reason=str(exc))
                continue
            self._apps[(environment, name)] = app
            log.info("app_restored", app=name, environment=environment)

    async def stop(self, environment: str, name: str) -> int:
        """Stop an app (by its name if deployed, by its run's instance if ephemeral)."""
        async with self._lock:
            app = self._apps.pop((environment, name), None)
            if app is None:
                raise exceptions.NotFoundError(
                    f"no app {name!r} is running in environment {environment!r}"
                )
            answered = await self._stop_app(app, remove=True)
        return answered

    async def shutdown(self) -> None:
        """Engine stopping: ephemeral apps go; deployed ones keep their queued inputs."""
        async with self._lock:
            for key, app in list(self._apps.items()):
                # A deployed app's pools on agents run on while this engine restarts.
                await self._stop_app(
                    app, remove=app.ephemeral and app.owned, drop_remote=app.ephemeral
                )
                del self._apps[key]
        await self._probe.close()

    # -- queries -----------------------------------------------------------------------

    def environments(self) -> set[str]:
        return {environment for environment, _ in self._apps}

    def __len__(self) -> int:
        return len(self._apps)

    def find(self, environment: str, name: str, tag: str | None = None) -> HostedApp:
        environment = naming.check_part("environment", environment)
        app = self._apps.get((environment, name))
        if app is None:
            what = f"function {name}.{tag}" if tag else f"app {name!r}"
            raise exceptions.NotFoundError(f"{what} is not deployed in environment {environment!r}")
        if tag is not None and tag not in app.specs:
            raise exceptions.NotFoundError(
                f"app {name!r} in environment {environment!r} has no function {tag!r} "
                f"(it has: {', '.join(sorted(app.specs))})"
            )
        return app

    def find_pool(self, pool: PoolName) -> tuple[HostedApp, str]:
        """The app and pool key a request names (a function, or one of its variants)."""
        app = self.find(pool.environment, pool.instance, pool.tag)
        key = pool_key(pool.tag, pool.variant)
        if key not in app.pools and key not in app.remote:
            raise exceptions.NotFoundError(
                f"{app.app}.{pool.tag} has no variant {pool.variant!r} (any more): "
                "it was reset by a redeploy; use with_options again"
            )
        return app, key

    def function(
        self, environment: str, instance: str, tag: str
    ) -> tuple[HostedApp, FunctionSpec] | None:
        """An app's function (or variant) by its key, if the app runs here and has it."""
        app = self._apps.get((environment, instance))
        spec = app.specs.get(tag) if app is not None else None
        return (app, spec) if app is not None and spec is not None else None

    def current_queue(self, environment: str, instance: str, key: str) -> str | None:
        """The queue of an app's function (or variant) now, if the app runs here and has it."""
        found = self.function(environment, instance, key)
        return found[0].queue(key) if found is not None else None

    async def status(self, app: HostedApp) -> AppStatus:
        functions = {key: await pool.stats() for key, pool in app.pools.items()}
        for key in list(app.remote):
            functions[key] = await self.pool_stats(app, key)
        return AppStatus(
            app.app, app.environment, app.instance, app.ephemeral, app.deployed_at, functions
        )

    async def statuses(self, environment: str | None) -> tuple[AppStatus, ...]:
        """Every app's status (of one environment, or of all)."""
        apps = [app for (env, _), app in sorted(self._apps.items()) if environment in (None, env)]
        return tuple([await self.status(app) for app in apps])

    async def pool_stats(self, app: HostedApp, key: str) -> PoolStats:
        node = app.remote.get(key)
        if node is not None:
            return await self._remote.stats(app, key, node)
        return await app.pools[key].stats()

    async def containers(
        self, environment: str, app_name: str | None, node: str
    ) -> ContainerListing:
        """The containers of ``environment``'s apps (or of the one named ``app_name``, by its
        name or instance): this node's (named ``node``), and those of the agents that run
        their placed pools. An agent that cannot be asked is named in the errors."""
        apps = self._apps_named(environment, app_name)
        if app_name is not None and not apps:
            raise exceptions.NotFoundError(
                f"no app {app_name!r} runs in environment {environment!r}"
            )
        found = [
            info
            for app in apps
            for key, pool in app.pools.items()
            for info in pool.containers(app.instance, key, node)
        ]
        errors: list[str] = []
        for agent in sorted({agent for app in apps for agent in app.remote.values()}):
            listing = await self._remote.containers(agent, ListContainers(environment, app_name))
            found.extend(listing.containers)
            errors.extend(listing.errors)
        found.sort(key=lambda info: (info.app, info.function, info.node, -info.uptime))
        return ContainerListing(tuple(found), tuple(errors))

    async def stop_container(self, environment: str, container: str, node: str) -> ContainerInfo:
        """Stop one container of ``environment``'s apps gracefully, here or on an agent."""
        apps = self._apps_named(environment, None)
        for app in apps:
            for key, pool in app.pools.items():
                info = pool.stop_container(container, app.instance, key, node)
                if info is not None:
                    return info
        unasked = []
        for agent in sorted({agent for app in apps for agent in app.remote.values()}):
            try:
                info = await self._remote.stop_container(
                    agent, StopContainer(environment, container)
                )
            except exceptions.WarrenError as exc:
                unasked.append(f"node {agent}: {type(exc).__name__}: {exc}")
                continue
            if info is not None:
                return info
        unreachable = f"; could not ask {', '.join(unasked)}" if unasked else ""
        raise exceptions.NotFoundError(
            f"no container {container!r} runs in environment {environment!r} "
            f"(warren container list shows their ids){unreachable}"
        )

    def _apps_named(self, environment: str, app_name: str | None) -> list[HostedApp]:
        environment = naming.check_part("environment", environment)
        return [
            app
            for (env, _), app in sorted(self._apps.items())
            if env == environment and app_name in (None, app.app, app.instance)
        ]

    def failure_log(self, environment: str, instance: str, key: str) -> FailureLog | None:
        """The last failures of a pool this node runs (None: no such pool here)."""
        app = self._apps.get((environment, instance))
        pool = app.pools.get(key) if app is not None else None
        return pool.failures if pool is not None else None

    async def update_autoscaler(
        self, app: HostedApp, key: str, changes: AutoscalerChanges
    ) -> Autoscaling:
        merged = merged_changes(app.overrides.get(key), changes)
        settings = with_changes(app.autoscaling(key, self.node.cpus), merged)  # validates
        app.overrides[key] = merged
        node = app.remote.get(key)
        if node is not None:
            await self._remote.update(app, key, node, settings.to_settings())
        else:
            app.pools[key].update(settings)
        if not app.ephemeral:
            self._records.save(app.record())
        log.info("autoscaler_updated", app=app.app, function=key, **dataclasses.asdict(settings))
        return settings

    async def queue_depth(self, name: str) -> int:
        """Messages ready in a queue (0 if it does not exist)."""
        return await self._probe.depth(name)

    async def watch_leases(self) -> None:
        """Stop ephemeral apps whose client is gone (see :mod:`warren_engine.daemon.leases`)."""
        await watch_leases(self._apps, self._probe, self.stop)

    # -- pools -------------------------------------------------------------------------

    def _warm(self, app: HostedApp, *, at_least: int) -> Warm:
        return lambda key: max(at_least, app.autoscaling(key, self.node.cpus).min_containers)

    async def _start(self, app: HostedApp, warm: Warm, *, restoring: bool = False) -> None:
        republisher = await self.prepare(app.environment)
        # Every placement runs to its end before a failure is acted on: then stopping the
        # app's pools stops all that were made.
        outcomes = await asyncio.gather(
            *(
                self._place_pool(app, key, republisher, warm(key), restoring=restoring)
                for key in list(app.specs)
            ),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            await self._stop_pools(app)
            raise failures[0]

    async def _place_pool(
        self,
        app: HostedApp,
        key: str,
        republisher: Republisher,
        warm: int,
        *,
        restoring: bool = False,
    ) -> None:
        """Start a pool on this node, or on an agent node that offers what it asks for.

        When restoring, a pool no node can take yet waits for an agent to join (its
        queue keeps the inputs meanwhile).
        """
        try:
            where = self.nodes.place(app.specs[key])
        except exceptions.InvalidError:
            if not restoring:
                raise
            await topology.declare_function_queue(
                self._channel, app.environment, app.queue(key), self.settings.queue_type
            )
            app.pending.add(key)
            log.warning("pool_waiting_for_a_node", app=app.app, function=key)
            return
        if where is None:
            await self._add_pool(app, key, republisher, warm)
            return
        await topology.declare_function_queue(
            self._channel, app.environment, app.queue(key), self.settings.queue_type
        )
        app.remote[key] = where
        environ = self.environ(app.environment, app.specs[key])
        await self._remote.host(app, key, where, warm, environ)

    def _check(
        self, environment: str, specs: dict[str, FunctionSpec], *, placing: bool = True
    ) -> None:
        """Refuse what no node can run: timeouts past the broker's, missing secrets..."""
        check_timeouts(specs, self.settings.broker_consumer_timeout)
        for spec in specs.values():
            local = self.nodes.place(spec) is None if placing else False  # raises if no node
            self.environ(environment, spec)
            if local:
                self._provisions.volumes(environment, spec)

    async def prepare(self, environment: str) -> Republisher:
        """Declare what an environment's pools need; the publisher they share."""
        await topology.declare_dead_letters(self._channel, environment, self.settings.queue_type)
        await topology.declare_cancel_exchange(self._channel, environment)
        await topology.declare_replies_exchange(self._channel)
        await topology.declare_requeue(self._channel, environment, self.settings.queue_type)
        await topology.declare_log_stream(self._channel, environment)
        return Republisher(self._publisher, environment, self.settings.queue_type)

    async def _add_pool(
        self,
        app: HostedApp,
        key: str,
        republisher: Republisher,
        warm: int,
        environ: dict[str, str | None] | None = None,
    ) -> ContainerPool:
        """Declare the queue of one of ``app``'s pools, and make and start the pool here.
        ``environ`` sets the containers' environment (an agent gets it from its primary)."""
        queue = app.queue(key)
        await topology.declare_function_queue(
            self._channel, app.environment, queue, self.settings.queue_type
        )
        app.pools[key] = pool = ContainerPool(
            FunctionConfig(
                self.settings.container_broker_url,
                app.environment,
                app.instance,
                queue,
                app.specs[key],
                str(app.code_path),
                self.settings.for_containers(),
                app.sys_path,
            ),
            app.autoscaling(key, self.node.cpus),
            self._cancels,
            self.queue_depth,
            self._answer_queued,
            republisher,
            (lambda: environ)
            if environ is not None
            else lambda: self.environ(app.environment, app.specs[key]),
            self._provisions.volumes(app.environment, app.specs[key]),
            self.node,
            self._cores if self.settings.pin_containers else None,
            self.metrics.function(app.environment, app.app, app.specs[key].tag),
        )
        await pool.start(warm)
        return pool

    async def ensure_variant(
        self, app: HostedApp, tag: str, options: dict[str, Any]
    ) -> FunctionSpec:
        """The variant of ``tag`` these options make: created (queue and pool) if new."""
        async with self._lock:
            if self._apps.get((app.environment, app.instance)) is not app:
                raise exceptions.NotFoundError(
                    f"app {app.app!r} was stopped or redeployed meanwhile: call again"
                )
            spec = app.specs[tag].with_overrides(options)
            key = pool_key(tag, spec.variant)
            if key in app.specs:
                return app.specs[key]
            self._check(app.environment, {key: spec})
            app.specs[key] = spec
            try:
                await self._place_pool(app, key, await self.prepare(app.environment), 0)
            except BaseException:
                app.specs.pop(key, None)
                app.pools.pop(key, None)
                app.remote.pop(key, None)
                raise
            if not app.ephemeral:
                self._records.save(app.record())
        log.info("variant_created", app=app.app, function=tag, variant=spec.variant)
        return spec

    async def _discard_queues(self, app: HostedApp, keep: set[str]) -> None:
        """Remove the queues a failed registration declared (not those still in use)."""
        for tag in set(app.specs) - keep:
            await answer_queued(
                self._connection,
                app.queue(tag),
                f"{app.app} did not start",
                self.signer,
                delete=True,
            )

    async def _answer_queued(self, queue: str, reason: str) -> int:
        return await answer_queued(self._connection, queue, reason, self.signer)

    async def _replace(self, previous: HostedApp, app: HostedApp) -> None:
        await self._stop_pools(previous)
        # Functions the new code lacks, and every variant (a redeploy resets them).
        for key in set(previous.specs) - set(app.specs):
            await answer_queued(
                self._connection,
                previous.queue(key),
                f"{app.app}.{key} was removed",
                self.signer,
                delete=True,
            )

    async def _stop_pools(self, app: HostedApp, *, drop_remote: bool = True) -> None:
        remote = list(app.remote.items()) if drop_remote else []
        for key, _ in remote:
            del app.remote[key]
        await asyncio.gather(
            *(pool.stop() for pool in app.pools.values()),
            *(self._remote.drop(app, key, node) for key, node in remote),
        )
        app.pools.clear()

    async def _stop_app(self, app: HostedApp, *, remove: bool, drop_remote: bool = True) -> int:
        await self._stop_pools(app, drop_remote=drop_remote)
        answered = 0
        if remove:
            for key in app.specs:
                answered += await answer_queued(
                    self._connection,
                    app.queue(key),
                    f"app {app.app!r} stopped",
                    self.signer,
                    delete=True,
                )
            if app.ephemeral:
                shutil.rmtree(app.code_path.parent, ignore_errors=True)
            elif app.owned:
                self._records.remove(app.environment, app.app)
        log.info("app_stopped", app=app.app, instance=app.instance, inputs_answered=answered)
        return answered

    # -- several nodes (warren_engine.nodes): a primary's side -----------------------------

    def adopt(self, name: str, running: set[PlacedPool]) -> list[tuple[HostedApp, str]]:
        """On an agent's heartbeat: adopt the pools it runs that wait for a node (this
        primary restarted), give it the waiting ones it can run; the pools placed on it
        that it does not run (it restarted, or they are new) are to be sent to it."""
        agent = self.nodes.agents[name]
        send = []
        for app in self._apps.values():
            for key in list(app.pending):
                if placed_pool(app, key) in running or agent.node.problem(app.specs[key]) is None:
                    app.pending.discard(key)
                    app.remote[key] = name
            for key, node in app.remote.items():
                if node == name and placed_pool(app, key) not in running:
                    send.append((app, key))
        return send

    async def rehost(self, name: str, running: set[PlacedPool]) -> None:
        """Send an agent the pools placed on it that it does not run."""
        for app, key in self.adopt(name, running):
            log.warning("pool_placed_again", app=app.app, function=key, node=name)
            try:
                environ = self.environ(app.environment, app.specs[key])
                await self._remote.host(app, key, name, 0, environ)
            except exceptions.WarrenError as exc:  # the next heartbeat tries again
                log.warning("pool_not_placed", app=app.app, function=key, reason=str(exc))

    # -- several nodes: an agent's side ----------------------------------------------------

    @staticmethod
    def _slot(pool: PlacedPool) -> tuple[str, str]:
        # Each deploy (generation) of an app is an app of its own here: a redeploy's pools
        # start beside the old ones, which the primary drops once the new ones run.
        return pool.environment, f"{pool.instance}#{pool.generation}"

    def placed(self) -> tuple[PlacedPool, ...]:
        """The pools this agent runs for its primary."""
        return tuple(placed_pool(app, key) for app in self._apps.values() for key in app.pools)

    def _placed_pool(self, pool: PlacedPool, node: str) -> ContainerPool:
        app = self._apps.get(self._slot(pool))
        if app is None or pool.key not in app.pools:
            raise exceptions.NotFoundError(f"node {node} runs no pool {pool.key!r}")
        return app.pools[pool.key]

    async def placed_stats(self, pool: PlacedPool, node: str) -> PoolStats:
        return await self._placed_pool(pool, node).stats()

    def update_placed(self, pool: PlacedPool, node: str, settings: Autoscaling) -> None:
        self._placed_pool(pool, node).update(settings)

    # No lock for these: each change is made between two awaits, so none sees another's
    # half done, and one pool's start (its containers' imports) does not hold up another's.

    async def host_placed(self, request: HostPool) -> None:
        """Run a pool the primary placed here (nothing if it runs already)."""
        pool = request.pool
        app = self._apps.get(self._slot(pool))
        if app is None:
            generation = str(pool.generation).replace(".", "-")
            code_path = (
                self.state_dir / "nodes" / pool.environment / pool.instance / generation
            ) / "code.msgpack"
            code_path.parent.mkdir(parents=True, exist_ok=True)
            code_path.write_bytes(request.code)
            app = HostedApp(
                pool.environment,
                request.app,
                pool.instance,
                {},
                code_path,
                ephemeral=True,
                sys_path=request.sys_path,
                owned=False,
                deployed_at=pool.generation,
            )
            self._apps[self._slot(pool)] = app
        if pool.key in app.specs:
            return  # placed here already (a heartbeat raced the original request)
        app.specs[pool.key] = request.spec
        try:
            republisher = await self.prepare(pool.environment)
            await self._add_pool(app, pool.key, republisher, request.warm, request.environ)
        except BaseException:
            app.specs.pop(pool.key, None)
            raise
        log.info("pool_hosted", app=app.app, function=pool.key)

    async def drop_placed(self, pool: PlacedPool) -> None:
        app = self._apps.get(self._slot(pool))
        if app is None or pool.key not in app.pools:
            return
        await app.pools.pop(pool.key).stop()
        app.specs.pop(pool.key, None)
        if not app.pools and self._apps.get(self._slot(pool)) is app:
            del self._apps[self._slot(pool)]
            shutil.rmtree(app.code_path.parent, ignore_errors=True)
        log.info("pool_dropped", app=app.app, function=pool.key)
