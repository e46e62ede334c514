"""Requests that change apps, made entries of their environment's registry.

A deploy, an ephemeral run, a variant, ``update_autoscaler``, a stop or a secret may reach any
engine node of the environment; that node checks the request, publishes the slots a
bounded pool needs (:mod:`warren_engine.pool.slots`), appends the change to the
registry (:mod:`warren_engine.cluster.registry_log`) and waits until it has applied it
itself, as every node does. It then does what is done once for the cluster: on a stop,
it answers the inputs still queued with an error and deletes the queues; on a redeploy,
it removes the queues of functions the new code no longer has. If its own pools of a
new deploy cannot start (the code does not import, say), it takes the change back with
a second entry and the caller gets the error.

A function is refused when no node can run it: its timeout is past the broker's (see
:mod:`warren_engine.daemon.hosted_app`), a secret or volume it names does not exist, or
no live node has the GPUs, labels or capacity it asks for.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import structlog
from warren import exceptions
from warren.secrets import check_env_values
from warren.wire import naming
from warren.wire.code_bundle import check_python
from warren.wire.control import AppBundle, AutoscalerChanges
from warren.wire.spec import FunctionSpec

from warren_engine.cluster.cluster import Cluster
from warren_engine.cluster.entries import AppPut, AppRemoved, SecretPut, SecretRemoved
from warren_engine.cluster.registry_log import entry_id
from warren_engine.daemon.app_registry import AppRegistry
from warren_engine.daemon.hosted_app import (
    HostedApp,
    check_timeouts,
    merged_changes,
    pool_key,
    specs_by_key,
    with_changes,
)
from warren_engine.daemon.leases import watch_leases
from warren_engine.pool.autoscaler import Autoscaling
from warren_engine.pool.slots import add_slots

log = structlog.get_logger(__name__)


class AppChanges:
    def __init__(self, registry: AppRegistry, cluster: Cluster) -> None:
        self._registry = registry
        self._cluster = cluster
        self._settings = registry.settings

    # -- registering and stopping ----------------------------------------------------------

    async def register(
        self, bundle: AppBundle, *, ephemeral: bool, lease: str | None = None
    ) -> HostedApp:
        check_python(bundle.code)
        environment = naming.check_part("environment", bundle.environment)
        registry_log = self._cluster.log(environment)
        app_name = naming.check_part("app name", bundle.app)
        instance = naming.check_part("app instance", bundle.instance if ephemeral else app_name)
        specs = specs_by_key(bundle.functions)
        self._check(environment, specs)
        previous = self._registry.hosted(environment, instance)
        deployed_at = _later_than(previous.deployed_at if previous is not None else 0.0)
        entry = AppPut(
            entry_id(),
            environment,
            app_name,
            instance,
            ephemeral,
            tuple(specs.values()),
            bundle.code,
            bundle.sys_path,
            {},
            deployed_at,
            lease if ephemeral else None,
            self._cluster.name,
        )
        await self._add_slots(entry)
        try:
            await registry_log.append(entry)
        except BaseException:
            await self._take_back(entry, previous)
            raise
        app = self._registry.find(environment, instance)
        if previous is not None:
            for key in set(previous.specs) - set(app.specs):
                await self._registry.remove_queues(previous, {key}, f"{app_name}.{key} was removed")
        return app

    async def stop(self, environment: str, instance: str) -> int:
        """Stop an app (by its name if deployed, by its run's instance if ephemeral)."""
        app = self._registry.hosted(environment, instance)
        if app is None:
            raise exceptions.NotFoundError(
                f"no app {instance!r} is running in environment {environment!r}"
            )
        removed = AppRemoved(entry_id(), environment, instance, app.deployed_at)
        await self._cluster.log(environment).append(removed)
        return await self._registry.remove_queues(app, set(app.specs), f"app {app.app!r} stopped")

    async def leave(self) -> None:
        """This node stopping. Alone, its ephemeral apps go with it (their callers are told
        by the queues' removal); with peers, they run on there."""
        if not self._cluster.alone_here:
            return
        for app in self._registry.apps():
            if app.ephemeral:
                try:
                    await self.stop(app.environment, app.instance)
                except exceptions.WarrenError as exc:
                    log.warning("app_not_stopped", app=app.app, reason=str(exc))

    async def watch_leases(self) -> None:
        """Stop ephemeral apps whose client is gone (this node checks those it leads)."""
        await watch_leases(
            self._registry.apps, self._cluster.leading, self._registry.lease_held, self.stop
        )

    # -- secrets ---------------------------------------------------------------------------

    async def put_secret(self, environment: str, name: str, values: dict[str, str]) -> None:
        """Create or replace a named secret on every node of the environment."""
        environment = naming.check_part("environment", environment)
        name = naming.check_part("secret name", name)
        checked = check_env_values(values, f"secret {name!r}")
        sealed = self._registry.sealer.seal(environment, name, checked)
        await self._cluster.log(environment).append(
            SecretPut(entry_id(), environment, name, sealed)
        )

    async def delete_secret(self, environment: str, name: str) -> None:
        self._registry.secrets.get(environment, name)  # NotFoundError if there is none
        await self._cluster.log(environment).append(SecretRemoved(entry_id(), environment, name))

    # -- changes to an app's pools ---------------------------------------------------------

    async def update_autoscaler(
        self, app: HostedApp, key: str, changes: AutoscalerChanges
    ) -> Autoscaling:
        cores = self._registry.node.cpus
        merged = merged_changes(app.overrides.get(key), changes)
        settings = with_changes(app.autoscaling(key, cores), merged)  # validates
        slots_before = app.autoscaling(key, cores).max_containers if app.max_is_set(key) else 0
        overrides = {**app.overrides, key: merged}
        entry = self._amended(app, app.specs, overrides)
        bounded = merged.max_containers is not None or app.specs[key].max_containers is not None
        if bounded and settings.max_containers > slots_before:
            await add_slots(
                self._registry.publisher,
                app.queue(key),
                self._settings.queue_type,
                app.deployed_at,
                range(slots_before, settings.max_containers),
            )
        await self._cluster.log(app.environment).append(entry)
        log.info("autoscaler_updated", app=app.app, function=key, max=settings.max_containers)
        return settings

    async def ensure_variant(
        self, app: HostedApp, tag: str, options: dict[str, Any]
    ) -> FunctionSpec:
        """The variant of ``tag`` these options make: created (queue and pools) if new."""
        spec = app.specs[tag].with_overrides(options)
        key = pool_key(tag, spec.variant)
        if key in app.specs:
            return app.specs[key]
        self._check(app.environment, {key: spec})
        entry = self._amended(app, {**app.specs, key: spec}, app.overrides)
        if spec.max_containers is not None:
            queue = naming.function_queue(app.environment, app.instance, spec.tag, spec.variant)
            await add_slots(
                self._registry.publisher,
                queue,
                self._settings.queue_type,
                app.deployed_at,
                range(spec.max_containers),
            )
        await self._cluster.log(app.environment).append(entry)
        current = self._registry.find(app.environment, app.instance)
        if current.deployed_at != app.deployed_at or key not in current.specs:
            raise exceptions.NotFoundError(
                f"app {app.app!r} was stopped or redeployed meanwhile: call again"
            )
        log.info("variant_created", app=app.app, function=tag, variant=spec.variant)
        return current.specs[key]

    # -- helpers ---------------------------------------------------------------------------

    def _amended(
        self,
        app: HostedApp,
        specs: dict[str, FunctionSpec],
        overrides: dict[str, AutoscalerChanges],
    ) -> AppPut:
        return AppPut(
            entry_id(),
            app.environment,
            app.app,
            app.instance,
            app.ephemeral,
            tuple(specs.values()),
            app.code_path.read_bytes(),
            app.sys_path,
            dict(overrides),
            app.deployed_at,
            app.lease,
            self._cluster.name,
        )

    async def _add_slots(self, entry: AppPut) -> None:
        for spec in entry.functions:
            if spec.max_containers is None:
                continue
            queue = naming.function_queue(entry.environment, entry.instance, spec.tag, spec.variant)
            await add_slots(
                self._registry.publisher,
                queue,
                self._settings.queue_type,
                entry.deployed_at,
                range(spec.max_containers),
            )

    async def _take_back(self, entry: AppPut, previous: HostedApp | None) -> None:
        """A new deploy did not start here: the registry goes back to what it was."""
        keep = set(previous.specs) if previous is not None else set()
        try:
            if previous is None:
                removed = AppRemoved(
                    entry_id(), entry.environment, entry.instance, entry.deployed_at, "failed"
                )
                await self._cluster.log(entry.environment).append(removed)
            else:
                again = previous.entry(
                    entry_id(), self._cluster.name, previous.code_path.read_bytes()
                )
                again = _redeployed(again, _later_than(entry.deployed_at))
                await self._add_slots(again)
                await self._cluster.log(entry.environment).append(again)
        except exceptions.WarrenError as exc:
            log.error("deploy_not_taken_back", app=entry.app, reason=str(exc))
        failed = HostedApp(
            entry.environment,
            entry.app,
            entry.instance,
            specs_by_key(entry.functions),
            self._registry.state_dir,
            entry.ephemeral,
        )
        await self._registry.remove_queues(
            failed, set(failed.specs) - keep, f"{entry.app} did not start"
        )

    def _check(self, environment: str, specs: dict[str, FunctionSpec]) -> None:
        """Refuse what no node can run: timeouts past the broker's, missing secrets..."""
        check_timeouts(specs, self._settings.broker_consumer_timeout)
        for spec in specs.values():
            problem = self._registry.node.problem(spec)
            if problem is not None and self._cluster.can_run_elsewhere(spec) is None:
                others = self._cluster.describe_others()
                if others:
                    problem += f"; nor do the other nodes: {', '.join(others)}"
                raise exceptions.InvalidError(problem)
            self._registry.check_volumes(environment, spec)


def _later_than(moment: float) -> float:
    """Now, or just after ``moment`` if the clock is behind it (a deploy's generation
    must grow, even when another node's clock ran ahead)."""
    return max(time.time(), moment + 0.001)


def _redeployed(entry: AppPut, deployed_at: float) -> AppPut:
    return dataclasses.replace(entry, deployed_at=deployed_at)
