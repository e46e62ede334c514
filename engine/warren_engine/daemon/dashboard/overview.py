"""The dashboard's main table: every app, its functions, and each pool's containers.

Built from the apps' statuses (``AppStatus``, as ``warren app status`` shows them), with
what the page adds to them: the node each pool runs on (this engine's own name where
the status says none), each function's web URL, and the count of its failed attempts.

This module does no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from warren.wire.control import AppStatus, PoolStats

from warren_engine.daemon.dashboard.history import PoolRef

WebUrl = Callable[[PoolRef], "str | None"]
FailureCount = Callable[[PoolRef], "int | None"]


def _pool(
    ref: PoolRef, stats: PoolStats, local_node: str, web_url: WebUrl, failures: FailureCount
) -> dict[str, Any]:
    return {
        "key": ref[2],
        "node": stats.node or local_node,
        "local": stats.node is None,
        "queued": stats.queued_inputs,
        "running": stats.running_inputs,
        "containers": stats.containers,
        "pids": list(stats.pids),
        "inputs_received": stats.inputs_received,
        "messages_received": stats.messages_received,
        "autoscaler": dataclasses.asdict(stats.autoscaler) if stats.autoscaler else None,
        "error": stats.error,
        "failures": failures(ref),  # None: kept on the node that runs the pool
        "web_url": web_url(ref),
    }


def overview(
    statuses: Sequence[AppStatus],
    *,
    local_node: str,
    web_url: WebUrl,
    failures: FailureCount,
) -> dict[str, Any]:
    apps: list[dict[str, Any]] = []
    for status in statuses:
        functions = [
            _pool((status.environment, status.instance, key), stats, local_node, web_url, failures)
            for key, stats in sorted(status.functions.items())
        ]
        apps.append(
            {
                "environment": status.environment,
                "app": status.app,
                "instance": status.instance,
                "ephemeral": status.ephemeral,
                "deployed_at": status.deployed_at,
                "functions": functions,
            }
        )
    pools = [pool for app in apps for pool in app["functions"]]
    return {
        "node": local_node,
        "apps": apps,
        "totals": {
            "apps": len(apps),
            "functions": len(pools),
            "containers": sum(pool["containers"] for pool in pools),
            "queued": sum(pool["queued"] for pool in pools),
            "running": sum(pool["running"] for pool in pools),
        },
    }
