"""Ephemeral apps whose client is gone: stopped by the engine.

``app.run()`` holds an exclusive *lease* queue while its client is connected. A lease
must be missing for several checks in a row before the app is stopped, so that a
client reconnecting after a broker restart keeps its app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from warren import exceptions

from warren_engine.daemon.hosted_app import HostedApp
from warren_engine.queue_probe import QueueProbe

log = structlog.get_logger(__name__)

LEASE_CHECK_SECONDS = 5.0
LEASE_CHECKS_MISSED = 3


async def watch_leases(
    apps: dict[tuple[str, str], HostedApp],
    probe: QueueProbe,
    stop: Callable[[str, str], Awaitable[int]],
) -> None:
    """Stop ephemeral apps whose client is gone (its lease queue vanished with it).

    A lease must be missing for several checks in a row, so that a client
    reconnecting after a broker restart keeps its app.
    """
    missing: dict[tuple[str, str], int] = {}
    while True:
        await asyncio.sleep(LEASE_CHECK_SECONDS)
        for key, app in list(apps.items()):
            if app.lease is None:
                continue
            exists, _ = await probe.look(app.lease)
            missing[key] = 0 if exists else missing.get(key, 0) + 1
            if missing[key] >= LEASE_CHECKS_MISSED:
                log.warning("app_abandoned_by_its_client", app=app.app, instance=app.instance)
                del missing[key]
                with contextlib.suppress(exceptions.NotFoundError):
                    await stop(app.environment, app.instance)
