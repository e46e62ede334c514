"""Ephemeral apps whose client is gone: stopped by the environment's leader.

``app.run()`` holds an exclusive *lease* queue while its client is connected. A lease
must be missing for several checks in a row before the app is stopped, so that a
client reconnecting after a broker restart keeps its app. Only the node that leads the
app's environment checks (:mod:`warren_engine.cluster.leadership`): the app is stopped
once for the cluster, and a stop that another node made first is no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from warren import exceptions

from warren_engine.daemon.hosted_app import HostedApp

log = structlog.get_logger(__name__)

LEASE_CHECK_SECONDS = 5.0
LEASE_CHECKS_MISSED = 3


async def watch_leases(
    apps: Callable[[], list[HostedApp]],
    leading: Callable[[str], bool],
    held: Callable[[str], Awaitable[bool]],
    stop: Callable[[str, str], Awaitable[int]],
) -> None:
    """Stop ephemeral apps whose client is gone (its lease queue vanished with it)."""
    missing: dict[tuple[str, str], int] = {}
    while True:
        await asyncio.sleep(LEASE_CHECK_SECONDS)
        for app in apps():
            key = (app.environment, app.instance)
            if app.lease is None or not leading(app.environment):
                missing.pop(key, None)
                continue
            missing[key] = 0 if await held(app.lease) else missing.get(key, 0) + 1
            if missing[key] >= LEASE_CHECKS_MISSED:
                log.warning("app_abandoned_by_its_client", app=app.app, instance=app.instance)
                del missing[key]
                with contextlib.suppress(exceptions.NotFoundError):
                    await stop(app.environment, app.instance)
