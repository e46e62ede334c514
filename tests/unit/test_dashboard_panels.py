"""What the dashboard's table and dead-letter panel are made of."""

from __future__ import annotations

from dataclasses import dataclass

from warren.wire.control import AppStatus, AutoscalerSettings, PoolStats
from warren_engine.daemon.dashboard.dead_letter_panel import (
    DeadLetterListing,
    DeadLetterSource,
    panel,
)
from warren_engine.daemon.dashboard.history import PoolRef
from warren_engine.daemon.dashboard.overview import overview


def test_the_overview_lists_each_apps_pools_with_their_node_pids_and_failures() -> None:
    # Given an app with a pool here and one on an agent node
    status = AppStatus(
        "shop",
        "main",
        "shop",
        ephemeral=False,
        deployed_at=1.0,
        functions={
            "resize": PoolStats(
                3, 1, 2, (41, 42), AutoscalerSettings(0, 2, 0, 60.0), inputs_received=9
            ),
            "train": PoolStats(0, 0, 1, (7,), node="gpu-1"),
        },
    )

    def web_url(ref: PoolRef) -> str | None:
        return "http://h/main/shop/resize" if ref[2] == "resize" else None

    def failures(ref: PoolRef) -> int | None:
        return 4 if ref[2] == "resize" else None  # an agent's pool keeps its own

    # When the overview is made
    made = overview([status], local_node="box", web_url=web_url, failures=failures)
    # Then each pool says where it runs, its pids, and what the page adds
    (app,) = made["apps"]
    resize, train = app["functions"]
    assert (resize["key"], resize["node"], resize["local"], resize["pids"]) == (
        "resize",
        "box",
        True,
        [41, 42],
    )
    assert (resize["queued"], resize["running"], resize["inputs_received"]) == (3, 1, 9)
    assert resize["failures"] == 4 and resize["web_url"] == "http://h/main/shop/resize"
    assert resize["autoscaler"]["max_containers"] == 2
    assert (train["node"], train["local"], train["failures"]) == ("gpu-1", False, None)
    assert made["totals"] == {"apps": 1, "functions": 2, "containers": 3, "queued": 3, "running": 1}


@dataclass(frozen=True)
class Entry:
    """What a dead-letter reader lists: anything with these attributes will do."""

    id: str
    reason: str
    app: str | None
    function: str | None
    dead_at: float | None


@dataclass(frozen=True)
class Listing:
    inputs: tuple[Entry, ...]
    total: int


async def test_the_dead_letter_panel_lists_what_its_source_returns_with_reasons() -> None:
    asked: list[tuple[str, int]] = []

    async def source(environment: str, limit: int) -> DeadLetterListing:
        asked.append((environment, limit))
        entry = Entry("3f2a9c1b7d0e", "crashed its container 3 times", "shop", "resize", 12.5)
        return Listing((entry,), total=7)

    typed: DeadLetterSource = source
    shown = await panel(typed, "main", 50)
    assert asked == [("main", 50)]
    assert shown == {
        "environment": "main",
        "available": True,
        "total": 7,
        "entries": [
            {
                "id": "3f2a9c1b7d0e",
                "reason": "crashed its container 3 times",
                "app": "shop",
                "function": "resize",
                "dead_at": 12.5,
            }
        ],
    }


async def test_a_source_that_fails_is_shown_as_its_error_not_a_broken_page() -> None:
    async def source(environment: str, limit: int) -> DeadLetterListing:
        raise ConnectionError("the broker is away")

    shown = await panel(source, "main", 50)
    assert shown["available"] is True and shown["entries"] == []
    assert shown["error"] == "ConnectionError: the broker is away"


async def test_without_a_source_the_panel_says_it_has_none_to_show() -> None:
    shown = await panel(None, "dev", 50)
    assert shown == {"environment": "dev", "available": False, "entries": [], "total": 0}
