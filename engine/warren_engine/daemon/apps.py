"""The apps an engine hosts: their queues, their pools, their records.

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
import shutil
import time
from pathlib import Path
from typing import Any

import structlog
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from warren import exceptions
from warren.config import Settings
from warren.wire import naming, topology
from warren.wire.code_bundle import check_python
from warren.wire.signing import signer
from warren.wire.spec import FunctionSpec

from warren_engine.daemon.cancel_memory import CancelMemory
from warren_engine.daemon.container_environment import Provisions
from warren_engine.daemon.failed_inputs import answer_queued
from warren_engine.daemon.hosted_app import HostedApp, check_timeouts, pool_key, specs_by_key
from warren_engine.daemon.leases import watch_leases
from warren_engine.daemon.records import Registry
from warren_engine.daemon.secret_store import SecretStore
from warren_engine.nodes.primary import Nodes, RemotePools
from warren_engine.pool.autoscaler import Autoscaling
from warren_engine.pool.cores import CorePlacement
from warren_engine.pool.node_capacity import Node
from warren_engine.pool.pool import ContainerPool, PoolConfig
from warren_engine.publisher import Republisher
from warren_engine.queue_probe import QueueProbe

log = structlog.get_logger(__name__)


class Host:
    def __init__(
        self,
        settings: Settings,
        connection: AbstractRobustConnection,
        channel: AbstractRobustChannel,
        state_dir: Path,
        cancels: CancelMemory,
    ) -> None:
        self.settings = settings
        self.signer = signer(settings)
        self._connection = connection
        self._channel = channel
        self._publisher: AbstractRobustChannel | None = None
        self.state_dir = state_dir
        self.registry = Registry(state_dir)
        self.secrets = SecretStore(state_dir)
        self.node = Node.from_settings(settings)
        self.cores = CorePlacement()
        self.provisions = Provisions(state_dir, self.secrets, self.node)
        self.environ = self.provisions.environ
        self.nodes = Nodes(self.node)
        self.remote = RemotePools(self.nodes, self._no_agents)
        self.cancels = cancels
        self.apps: dict[tuple[str, str], HostedApp] = {}
        self._lock = asyncio.Lock()
        self._probe = QueueProbe(connection)

    # -- registering and stopping ----------------------------------------------------------

    async def register(self, args: dict[str, Any], *, ephemeral: bool) -> HostedApp:
        check_python(args["code"])
        environment = naming.check_part("environment", args["environment"])
        app_name = naming.check_part("app name", args["app"])
        instance = naming.check_part("app instance", args["instance"] if ephemeral else app_name)
        specs = specs_by_key(args["functions"])
        self._check(environment, specs)
        if ephemeral:
            code_path = self.state_dir / "runs" / environment / instance / "code.msgpack"
            code_path.parent.mkdir(parents=True, exist_ok=True)
            code_path.write_bytes(args["code"])
        else:
            code_path = self.registry.save_code(environment, app_name, args["code"])
        app = HostedApp(
            environment,
            app_name,
            instance,
            specs,
            code_path,
            ephemeral,
            tuple(args.get("sys_path", ())),
            lease=args.get("lease") if ephemeral else None,
        )
        async with self._lock:
            previous = self.apps.get((environment, instance))
            try:
                await self._start(
                    app,
                    warm=lambda tag: max(1, app.autoscaling(tag, self.node.cpus).min_containers),
                )
            except BaseException:
                await self._discard_queues(app, keep=set(previous.specs) if previous else set())
                raise
            if previous is not None:
                await self._replace(previous, app)
            if not ephemeral:
                self.registry.save(environment, app_name, app.record())
                self.registry.prune_code(environment, app_name, keep=code_path)
            self.apps[(environment, instance)] = app
        log.info("app_registered", app=app_name, instance=instance, ephemeral=ephemeral)
        return app

    async def restore(self) -> None:
        """Bring back the deployed apps recorded on disk (after an engine restart)."""
        for record in self.registry.load_all():
            environment, name = record["environment"], record["app"]
            specs = specs_by_key(record["functions"])
            app = HostedApp(
                environment,
                name,
                name,
                specs,
                self.registry.directory(environment, name) / record["code"],
                False,
                tuple(record.get("sys_path", ())),
                dict(record.get("overrides", {})),
                deployed_at=float(record.get("deployed_at", time.time())),
            )
            try:
                self._check(environment, specs, placing=False)  # agents may not have joined
                await self._start(
                    app,
                    warm=lambda tag, a=app: a.autoscaling(tag, self.node.cpus).min_containers,
                    restoring=True,
                )
            except exceptions.WarrenError as exc:
                log.error("app_not_restored", app=name, environment=environment, reason=str(exc))
                continue
            self.apps[(environment, name)] = app
            log.info("app_restored", app=name, environment=environment)

    async def stop(self, environment: str, name: str) -> int:
        """Stop an app (by its name if deployed, by its run's instance if ephemeral)."""
        async with self._lock:
            app = self.apps.pop((environment, name), None)
            if app is None:
                raise exceptions.NotFoundError(
                    f"no app {name!r} is running in environment {environment!r}"
                )
            answered = await self._stop_app(app, remove=True)
        return answered

    async def shutdown(self) -> None:
        """Engine stopping: ephemeral apps go; deployed ones keep their queued inputs."""
        async with self._lock:
            for key, app in list(self.apps.items()):
                # A deployed app's pools on agents run on while this engine restarts.
                await self._stop_app(
                    app, remove=app.ephemeral and app.owned, drop_remote=app.ephemeral
                )
                del self.apps[key]
        await self._probe.close()

    # -- queries -----------------------------------------------------------------------

    def find(self, environment: str, name: str, tag: str | None = None) -> HostedApp:
        app = self.apps.get((environment, name))
        if app is None:
            what = f"function {name}.{tag}" if tag else f"app {name!r}"
            raise exceptions.NotFoundError(f"{what} is not deployed in environment {environment!r}")
        if tag is not None and tag not in app.specs:
            raise exceptions.NotFoundError(
                f"app {name!r} in environment {environment!r} has no function {tag!r} "
                f"(it has: {', '.join(sorted(app.specs))})"
            )
        return app

    async def status(self, app: HostedApp) -> dict[str, Any]:
        functions = {key: pool.stats() for key, pool in app.pools.items()}
        for key in list(app.remote):
            functions[key] = await self.pool_stats(app, key)
        return {
            "app": app.app,
            "environment": app.environment,
            "instance": app.instance,
            "ephemeral": app.ephemeral,
            "deployed_at": app.deployed_at,
            "functions": functions,
        }

    async def pool_stats(self, app: HostedApp, key: str) -> dict[str, Any]:
        if key in app.remote:
            return await self.remote.stats(app, key)
        return app.pools[key].stats()

    async def update_autoscaler(
        self, app: HostedApp, key: str, changes: dict[str, Any]
    ) -> Autoscaling:
        merged = {
            **app.overrides.get(key, {}),
            **{k: v for k, v in changes.items() if v is not None},
        }
        settings = app.autoscaling(key, self.node.cpus).updated(merged)  # validates
        app.overrides[key] = merged
        if key in app.remote:
            await self.remote.update(app, key, settings.to_wire())
        else:
            app.pools[key].update(settings)
        if not app.ephemeral:
            self.registry.save(app.environment, app.app, app.record())
        log.info("autoscaler_updated", app=app.app, function=key, **settings.to_wire())
        return settings

    async def queue_depth(self, name: str) -> int:
        """Messages ready in a queue (0 if it does not exist)."""
        return await self._probe.depth(name)

    async def watch_leases(self) -> None:
        """Stop ephemeral apps whose client is gone (see :mod:`warren_engine.daemon.leases`)."""
        await watch_leases(self.apps, self._probe, self.stop)

    # -- pools -------------------------------------------------------------------------

    async def _no_agents(self, op: str, args: dict[str, Any], queue: str) -> dict[str, Any]:
        raise exceptions.EngineError(f"this engine cannot reach agent nodes ({op} to {queue})")

    async def _start(self, app: HostedApp, warm: Any, *, restoring: bool = False) -> None:
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
            await self.add_pool(app, key, republisher, warm)
            return
        await topology.declare_function_queue(
            self._channel, app.environment, app.queue(key), self.settings.queue_type
        )
        app.remote[key] = where
        await self.remote.host(app, key, warm, self.environ(app.environment, app.specs[key]))

    def _check(
        self, environment: str, specs: dict[str, FunctionSpec], *, placing: bool = True
    ) -> None:
        """Refuse what no node can run: timeouts past the broker's, missing secrets..."""
        check_timeouts(specs, self.settings.broker_consumer_timeout)
        for spec in specs.values():
            local = self.nodes.place(spec) is None if placing else False  # raises if no node
            self.environ(environment, spec)
            if local:
                self.provisions.volumes(environment, spec)

    async def prepare(self, environment: str) -> Republisher:
        """Declare what an environment's pools need; the publisher they share."""
        await topology.declare_dead_letters(self._channel, environment)
        await topology.declare_cancel_exchange(self._channel, environment)
        await topology.declare_replies_exchange(self._channel)
        await topology.declare_requeue(self._channel, environment)
        if self._publisher is None:
            self._publisher = await self._connection.channel(publisher_confirms=True)
        return Republisher(self._publisher, environment)

    async def add_pool(
        self,
        app: HostedApp,
        key: str,
        republisher: Republisher,
        warm: int,
        environ: dict[str, str | None] | None = None,
    ) -> ContainerPool:
        """Declare the queue of one of ``app``'s pools, and make and start the pool here.
        ``environ`` sets the containers' environment (an agent gets it from its primary)."""
        pool = await self._make_pool(app, key, republisher, environ)
        await pool.start(warm)
        return pool

    async def _make_pool(
        self,
        app: HostedApp,
        key: str,
        republisher: Republisher,
        environ: dict[str, str | None] | None,
    ) -> ContainerPool:
        queue = app.queue(key)
        await topology.declare_function_queue(
            self._channel, app.environment, queue, self.settings.queue_type
        )
        app.pools[key] = pool = ContainerPool(
            PoolConfig(
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
            self.cancels,
            self.queue_depth,
            self._answer_queued,
            republisher,
            (lambda: environ)
            if environ is not None
            else lambda: self.environ(app.environment, app.specs[key]),
            self.provisions.volumes(app.environment, app.specs[key]),
            self.node,
            self.cores if self.settings.pin_containers else None,
        )
        return pool

    async def ensure_variant(
        self, app: HostedApp, tag: str, options: dict[str, Any]
    ) -> FunctionSpec:
        """The variant of ``tag`` these options make: created (queue and pool) if new."""
        async with self._lock:
            if self.apps.get((app.environment, app.instance)) is not app:
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
                self.registry.save(app.environment, app.app, app.record())
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
        remote = list(app.remote) if drop_remote else []
        await asyncio.gather(
            *(pool.stop() for pool in app.pools.values()),
            *(self.remote.drop(app, key) for key in remote),
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
                self.registry.remove(app.environment, app.app)
        log.info("app_stopped", app=app.app, instance=app.instance, inputs_answered=answered)
        return answered
