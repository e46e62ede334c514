"""The app registry: the apps this engine node runs, their queues, their pools.

It is the one owner of :class:`~warren_engine.daemon.hosted_app.HostedApp` state on its
node: the control plane, the gateway and the dashboard ask it, and it alone changes an
app, as it applies the entries of each environment's registry
(:mod:`warren_engine.cluster.entries`) in the order the registry gives them. Every node
applies the same entries, so each runs its part of every app: a pool for each function
the node can run (its labels, GPUs and capacity fit), sized to the node's share of the
pool (:mod:`warren_engine.pool.shares`).

An app is *ephemeral* (``app.run()``: its queues carry a run id and go when it stops)
or *deployed* (``warren deploy``/``app.deploy()``: its queues carry the app's name, and
it comes back when engines restart, since the registry keeps it). A redeploy starts
the new code's containers, then stops the old ones (they finish what they run).
What is done once for the cluster (answering queued inputs of a stopped app, removing
its queues) is done by the node that took the request: see
:mod:`warren_engine.daemon.app_changes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection
from warren import exceptions
from warren.config import Settings
from warren.wire import naming, topology
from warren.wire.control import (
    AppStatus,
    ContainerInfo,
    ContainerListing,
    PoolName,
    PoolStats,
)
from warren.wire.signing import load_key, signer
from warren.wire.spec import FunctionSpec

from warren_engine.cluster.cluster import Cluster
from warren_engine.cluster.entries import (
    AppPut,
    AppRemoved,
    Entry,
    SecretPut,
    SecretRemoved,
    Synced,
)
from warren_engine.cluster.sealed_secrets import SecretSealer
from warren_engine.container.container import FunctionConfig
from warren_engine.daemon.container_environment import Provisions
from warren_engine.daemon.dead_letters import DeadLetters
from warren_engine.daemon.failed_inputs import answer_queued
from warren_engine.daemon.hosted_app import HostedApp, pool_key, specs_by_key
from warren_engine.daemon.secret_store import SecretStore
from warren_engine.pool.cancel_memory import CancelMemory
from warren_engine.pool.cores import CorePlacement
from warren_engine.pool.failure_log import FailureLog
from warren_engine.pool.metrics import EngineMetrics
from warren_engine.pool.node_capacity import Node
from warren_engine.pool.pool import ContainerPool
from warren_engine.pool.presence import PoolBeat
from warren_engine.pool.slots import Slots, remove_slots
from warren_engine.publisher import Republisher
from warren_engine.queue_probe import QueueProbe

log = structlog.get_logger(__name__)

AppKey = tuple[str, str]  # (environment, instance)


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
        cluster: Cluster,
        metrics: EngineMetrics,
    ) -> None:
        self.settings = settings
        self.signer = signer(settings)
        self._connection = connection
        self._channel = channel
        # Shared by the pools' republishers: a channel with publisher confirms.
        self.publisher = publisher
        self.state_dir = state_dir
        self.secrets = secrets
        self.sealer = SecretSealer(load_key(settings))
        self.cluster = cluster
        self.node: Node = cluster.node
        self.name = cluster.name
        self._cores = CorePlacement()
        self._provisions = Provisions(state_dir, secrets, self.node)
        self.environ = self._provisions.environ
        self._cancels = cancels
        self._apps: dict[AppKey, HostedApp] = {}
        self._folded: dict[AppKey, AppPut] = {}  # read at start, before the node's Synced
        self._slot_channel: AbstractChannel | None = None
        self._probe = QueueProbe(connection)
        self.metrics = metrics  # every pool's series, which the gateway serves
        # The environments' dead-letter queues; a retry goes to the queues these apps have now.
        self.dead_letters = DeadLetters(connection, self.signer, self.current_queue)
        self._appliers: dict[type[Any], Callable[[Any, bool], Awaitable[None]]] = {
            AppPut: self._apply_put,
            AppRemoved: self._apply_removed,
            Synced: self._apply_synced,
            SecretPut: self._apply_secret,
            SecretRemoved: self._apply_secret_removed,
        }

    async def start(self) -> None:
        """Read every environment's registry and start what it holds, then follow it."""
        self._slot_channel = await self._connection.channel()
        await self.cluster.start(self.apply, self.pool_beats)

    async def shutdown(self) -> None:
        """This node stopping: its pools stop (their queued inputs stay for the others, or
        for the next start)."""
        for app in list(self._apps.values()):
            await self._stop_pools(app)
        self._apps.clear()
        await self.cluster.close()
        await self._probe.close()

    # -- applying the registry -------------------------------------------------------------

    async def apply(self, entry: Entry, live: bool) -> None:
        await self._appliers[type(entry)](entry, live)

    async def _apply_synced(self, entry: Synced, live: bool) -> None:
        """This node has read what was there when it started: run it."""
        folded, self._folded = self._folded, {}
        for put in folded.values():
            try:
                await self._apply_put(put, True, restoring=True)
            except exceptions.WarrenError as exc:
                log.error(
                    "app_not_restored", app=put.app, environment=put.environment, reason=str(exc)
                )
            else:
                log.info("app_restored", app=put.app, environment=put.environment)

    async def _apply_put(self, entry: AppPut, live: bool, *, restoring: bool = False) -> None:
        key = (entry.environment, entry.instance)
        if not live:
            self._folded[key] = entry
            return
        previous = self._apps.get(key)
        if previous is not None and previous.deployed_at == entry.deployed_at:
            await self._amend(previous, entry)
            return
        if previous is not None and previous.deployed_at > entry.deployed_at:
            return  # an older deploy, read after a newer one
        app = self._hosted(entry)
        here = entry.node == self.name and not restoring
        await self._start(app, at_least=1 if here else 0, strict=here)
        if previous is not None:
            await self._stop_pools(previous)
            self._forget_code(previous, keep=app.code_path)
        self._apps[key] = app
        log.info("app_registered", app=app.app, instance=app.instance, ephemeral=app.ephemeral)

    async def _apply_removed(self, entry: AppRemoved, live: bool) -> None:
        key = (entry.environment, entry.instance)
        if not live:
            folded = self._folded.get(key)
            if folded is not None and folded.deployed_at <= entry.deployed_at:
                del self._folded[key]
            return
        app = self._apps.get(key)
        if app is None or app.deployed_at > entry.deployed_at:
            return
        del self._apps[key]
        await self._stop_pools(app)
        self._forget_code(app)
        log.info("app_stopped", app=app.app, instance=app.instance, reason=entry.reason)

    async def _apply_secret(self, entry: SecretPut, live: bool) -> None:
        """A secret, in order with the apps (a deploy after it finds it), even while
        catching up: the store keeps the latest."""
        values = self.sealer.open(entry.environment, entry.name, entry.sealed)
        self.secrets.put(entry.environment, entry.name, values)
        if live:
            log.info("secret_stored", environment=entry.environment, name=entry.name)

    async def _apply_secret_removed(self, entry: SecretRemoved, live: bool) -> None:
        with contextlib.suppress(exceptions.NotFoundError):
            self.secrets.delete(entry.environment, entry.name)

    async def _amend(self, app: HostedApp, entry: AppPut) -> None:
        """The same deploy, changed: variants made, autoscaler settings updated."""
        specs = specs_by_key(entry.functions)
        app.overrides = dict(entry.overrides)
        here = entry.node == self.name
        for key, spec in specs.items():
            if key not in app.specs:
                app.specs[key] = spec
                try:
                    await self._place_pool(app, key, await self.prepare(app.environment), 0)
                except Exception:
                    app.specs.pop(key, None)
                    app.pools.pop(key, None)
                    if here:
                        raise
                    log.exception("variant_not_started", app=app.app, function=key)
        for key, pool in app.pools.items():
            pool.update(app.autoscaling(key, self.node.cpus))
            pool.bound(self.slots_of(app, key), max_is_per_node=not app.max_is_set(key))

    def _hosted(self, entry: AppPut) -> HostedApp:
        code_path = (
            self.state_dir
            / "apps"
            / entry.environment
            / entry.instance
            / f"code-{entry.deployed_at:.6f}.msgpack"
        )
        code_path.parent.mkdir(parents=True, exist_ok=True)
        if not code_path.exists():
            code_path.write_bytes(entry.code)
        return HostedApp(
            entry.environment,
            entry.app,
            entry.instance,
            specs_by_key(entry.functions),
            code_path,
            entry.ephemeral,
            entry.sys_path,
            overrides=dict(entry.overrides),
            deployed_at=entry.deployed_at,
            lease=entry.lease,
        )

    def _forget_code(self, app: HostedApp, keep: Path | None = None) -> None:
        if app.code_path != keep:
            app.code_path.unlink(missing_ok=True)
        directory = app.code_path.parent
        if keep is None or keep.parent != directory:
            shutil.rmtree(directory, ignore_errors=True)

    # -- queries -----------------------------------------------------------------------

    def environments(self) -> tuple[str, ...]:
        return self.cluster.environments

    def apps(self) -> list[HostedApp]:
        return [app for _, app in sorted(self._apps.items())]

    def __len__(self) -> int:
        return len(self._apps)

    def find(self, environment: str, name: str, tag: str | None = None) -> HostedApp:
        environment = naming.check_part("environment", environment)
        self.cluster.log(environment)  # raises if this node does not serve it
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
        if key not in app.specs:
            raise exceptions.NotFoundError(
                f"{app.app}.{pool.tag} has no variant {pool.variant!r} (any more): "
                "it was reset by a redeploy; use with_options again"
            )
        return app, key

    def hosted(self, environment: str, instance: str) -> HostedApp | None:
        """The app of that instance, if its environment's registry has it."""
        return self._apps.get((environment, instance))

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
        functions = {key: await self.pool_stats(app, key) for key in app.specs}
        return AppStatus(
            app.app,
            app.environment,
            app.instance,
            app.ephemeral,
            app.deployed_at,
            functions,
            leader=self.cluster.leader(app.environment),
            nodes=tuple(
                beat.name
                for beat in self.cluster.membership.nodes()
                if app.environment in beat.environments
            ),
        )

    async def statuses(self, environment: str | None) -> tuple[AppStatus, ...]:
        """Every app's status (of one environment, or of all this node serves)."""
        if environment is not None:
            self.cluster.log(environment)
        apps = [app for app in self.apps() if environment in (None, app.environment)]
        return tuple([await self.status(app) for app in apps])

    async def pool_stats(self, app: HostedApp, key: str) -> PoolStats:
        """A pool on every node: this node's stats asked afresh, the others' from their
        last heartbeat."""
        pool = app.pools.get(key)
        if pool is not None:
            here = await pool.stats()
        else:
            queued = await self.queue_depth(app.queue(key))
            here = PoolStats(
                queued_inputs=queued,
                autoscaler=app.autoscaling(key, self.node.cpus).to_settings(),
            )
        elsewhere = self.cluster.elsewhere(app.queue(key))
        if not elsewhere:
            return dataclasses.replace(here, nodes={self.name: here.containers} if pool else {})
        nodes = {name: beat.containers for name, beat in elsewhere}
        if pool is not None:
            nodes[self.name] = here.containers
        return dataclasses.replace(
            here,
            running_inputs=here.running_inputs + sum(b.running for _, b in elsewhere),
            held_inputs=here.held_inputs + sum(b.held for _, b in elsewhere),
            containers=here.containers + sum(b.containers for _, b in elsewhere),
            pids=tuple(sorted((*here.pids, *(p for _, b in elsewhere for p in b.pids)))),
            nodes=dict(sorted(nodes.items())),
        )

    def pool_beats(self) -> tuple[PoolBeat, ...]:
        """What this node runs of each pool, for its heartbeat."""
        return tuple(pool.beat() for app in self._apps.values() for pool in app.pools.values())

    def containers(self, environment: str, app_name: str | None) -> ContainerListing:
        """The containers of ``environment``'s apps (or of the one named ``app_name``, by its
        name or instance) on this node."""
        apps = self._apps_named(environment, app_name)
        if app_name is not None and not apps:
            raise exceptions.NotFoundError(
                f"no app {app_name!r} runs in environment {environment!r}"
            )
        found = [
            info
            for app in apps
            for key, pool in app.pools.items()
            for info in pool.containers(app.instance, key, self.name)
        ]
        return ContainerListing(tuple(found))

    def stop_container(self, environment: str, container: str) -> ContainerInfo | None:
        """Stop one container of ``environment``'s apps on this node, if it runs it."""
        for app in self._apps_named(environment, None):
            for key, pool in app.pools.items():
                info = pool.stop_container(container, app.instance, key, self.name)
                if info is not None:
                    return info
        return None

    def _apps_named(self, environment: str, app_name: str | None) -> list[HostedApp]:
        environment = naming.check_part("environment", environment)
        return [
            app
            for app in self.apps()
            if app.environment == environment and app_name in (None, app.app, app.instance)
        ]

    def failure_log(self, environment: str, instance: str, key: str) -> FailureLog | None:
        """The last failures of a pool this node runs (None: no such pool here)."""
        app = self._apps.get((environment, instance))
        pool = app.pools.get(key) if app is not None else None
        return pool.failures if pool is not None else None

    async def queue_depth(self, name: str) -> int:
        """Messages ready in a queue (0 if it does not exist)."""
        return await self._probe.depth(name)

    async def lease_held(self, lease: str) -> bool:
        exists, _ = await self._probe.look(lease)
        return exists

    # -- pools -------------------------------------------------------------------------

    def runs_here(self, spec: FunctionSpec) -> bool:
        return self.node.problem(spec) is None

    async def _start(self, app: HostedApp, *, at_least: int, strict: bool) -> None:
        """Start the pools of ``app`` this node can run. ``strict``: a pool that fails to
        start fails the whole (this node took the request, and answers its caller)."""
        republisher = await self.prepare(app.environment)
        keys = list(app.specs)
        outcomes = await asyncio.gather(
            *(self._place_pool(app, key, republisher, at_least) for key in keys),
            return_exceptions=True,
        )
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if not failures:
            return
        if strict:
            await self._stop_pools(app)
            raise failures[0]
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.error("pool_not_started", app=app.app, function=key, reason=str(outcome))

    async def _place_pool(
        self, app: HostedApp, key: str, republisher: Republisher, at_least: int
    ) -> None:
        """Declare a pool's queue, and run the pool here if this node can."""
        spec = app.specs[key]
        await topology.declare_function_queue(
            self._channel, app.environment, app.queue(key), self.settings.queue_type
        )
        if not self.runs_here(spec):
            log.info("pool_left_to_other_nodes", app=app.app, function=key)
            return
        share = self.cluster.share(app.queue(key))
        warm = max(at_least, share.of(app.autoscaling(key, self.node.cpus).min_containers))
        await self._add_pool(app, key, republisher, warm)

    async def prepare(self, environment: str) -> Republisher:
        """Declare what an environment's pools need; the publisher they share."""
        await topology.declare_dead_letters(self._channel, environment, self.settings.queue_type)
        await topology.declare_cancel_exchange(self._channel, environment)
        await topology.declare_replies_exchange(self._channel)
        await topology.declare_requeue(self._channel, environment, self.settings.queue_type)
        await topology.declare_log_stream(self._channel, environment)
        return Republisher(self.publisher, environment, self.settings.queue_type)

    def slots_of(self, app: HostedApp, key: str) -> Slots | None:
        """The pool's slots, if its ``max_containers`` is set (a cluster-wide bound)."""
        if not app.max_is_set(key):
            return None
        assert self._slot_channel is not None, "start() first"
        return Slots(
            self._slot_channel,
            app.queue(key),
            self.settings.queue_type,
            app.deployed_at,
            lambda: app.autoscaling(key, self.node.cpus).max_containers,
        )

    async def _add_pool(
        self, app: HostedApp, key: str, republisher: Republisher, warm: int
    ) -> ContainerPool:
        """Make and start one of ``app``'s pools here."""
        queue = app.queue(key)
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
            lambda: self.environ(app.environment, app.specs[key]),
            self._provisions.volumes(app.environment, app.specs[key]),
            self.node,
            self._cores if self.settings.pin_containers else None,
            self.metrics.function(app.environment, app.app, app.specs[key].tag),
            share=lambda: self.cluster.share(queue),
            slots=self.slots_of(app, key),
            max_is_per_node=not app.max_is_set(key),
        )
        try:
            await pool.start(warm)
        except BaseException:
            app.pools.pop(key, None)
            raise
        return pool

    def check_volumes(self, environment: str, spec: FunctionSpec) -> None:
        self.environ(environment, spec)
        if self.runs_here(spec):
            self._provisions.volumes(environment, spec)

    async def _answer_queued(self, queue: str, reason: str) -> int:
        return await answer_queued(self._connection, queue, reason, self.signer)

    async def remove_queues(self, app: HostedApp, keys: set[str], reason: str) -> int:
        """Answer what is queued for these pools with an error, and delete their queues
        (the node that took the request does this, once for the cluster)."""
        answered = 0
        for key in keys:
            answered += await answer_queued(
                self._connection, app.queue(key), reason, self.signer, delete=True
            )
            if app.max_is_set(key):
                await remove_slots(self._channel, app.queue(key))
        return answered

    async def _stop_pools(self, app: HostedApp) -> None:
        await asyncio.gather(*(pool.stop() for pool in app.pools.values()))
        app.pools.clear()
