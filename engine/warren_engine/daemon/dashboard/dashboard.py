"""The dashboard's routes on the gateway, and the sampling behind its chart.

=====================================  =================================================
``GET /``                              the page (``?token=`` logs a browser in)
``GET /_dashboard/static/{file}``      its script and style sheet
``GET /_dashboard/api/overview``       apps, functions, pools, containers (pids, node)
``GET /_dashboard/api/history``        the chart: every pool summed, or one pool's
                                       (``?environment=&instance=&function=``)
``GET /_dashboard/api/failures``       the last failed attempts with their tracebacks
                                       (of every pool, or of one)
``GET /_dashboard/api/logs``           a function's last lines (``environment``,
                                       ``instance``, ``function``)
``GET /_dashboard/api/dead-letters``   an environment's dead-letter queue
                                       (``?environment=``)
=====================================  =================================================

Everything is read-only and answers 401 without the token (:mod:`.access`). While the
engine runs, a task records every pool's stats every ``PERIOD`` seconds
(:mod:`.history`); the overview answers from the latest of these, so that a page
polling every two seconds costs no more than the sampling does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web
from warren.exceptions import InvalidError
from warren.names import check_part
from warren.wire.control import AppStatus, PoolStats
from warren.wire.session import BrokerSession

from warren_engine.daemon.app_registry import AppRegistry
from warren_engine.daemon.dashboard.access import DashboardAccess, refused
from warren_engine.daemon.dashboard.dead_letter_panel import DeadLetterSource, panel
from warren_engine.daemon.dashboard.history import PERIOD, History, PoolRef
from warren_engine.daemon.dashboard.log_tail import LogTail
from warren_engine.daemon.dashboard.overview import overview

log = structlog.get_logger(__name__)

STATIC = Path(__file__).parent / "static"
FILES = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
FAILURES_SHOWN = 50
DEAD_LETTERS_SHOWN = 50
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=HEADERS
    )


class BadQuery(Exception):
    pass


def _name(request: web.Request, name: str, default: str = "") -> str:
    value = request.query.get(name, default)
    if "." in value:  # a variant's key: its function's tag, a dot, the variant's name
        tag, _, variant = value.partition(".")
        return f"{_checked(name, tag)}.{_checked(name, variant)}"
    return _checked(name, value)


def _checked(name: str, value: str) -> str:
    try:
        return check_part(name, value)
    except InvalidError as exc:
        raise BadQuery(str(exc)) from None


def _pool_ref(request: web.Request, *, required: bool) -> PoolRef | None:
    names = ("environment", "instance", "function")
    if not required and not any(request.query.get(name) for name in names):
        return None
    if not all(request.query.get(name) for name in names):
        raise BadQuery("name the pool: environment, instance and function")
    environment, instance, key = (_name(request, name) for name in names)
    return environment, instance, key


class Dashboard:
    def __init__(
        self,
        access: DashboardAccess,
        registry: AppRegistry,
        session: BrokerSession,
        *,
        local_node: str,
        base_url: Callable[[], str],
        dead_letters: DeadLetterSource | None = None,
    ) -> None:
        self.access = access
        self._registry = registry
        self._local_node = local_node
        self._base_url = base_url
        self._dead_letters = dead_letters
        self._history = History()
        self._logs = LogTail(session)
        self._latest: tuple[AppStatus, ...] | None = None
        self._sampler: asyncio.Task[None] | None = None

    # -- life cycle --------------------------------------------------------------------

    def mount(self, router: web.UrlDispatcher) -> None:
        """Add the routes (before the web endpoints' catch-all route)."""
        guarded = self._guarded
        router.add_get("/", self._page)
        router.add_get("/_dashboard/static/{file}", guarded(self._static))
        router.add_get("/_dashboard/api/overview", guarded(self._overview))
        router.add_get("/_dashboard/api/history", guarded(self._chart))
        router.add_get("/_dashboard/api/failures", guarded(self._failures))
        router.add_get("/_dashboard/api/logs", guarded(self._log_tail))
        router.add_get("/_dashboard/api/dead-letters", guarded(self._dead_letter_panel))

    def start(self) -> None:
        self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        await self._logs.close()

    # -- sampling ----------------------------------------------------------------------

    async def _sample_forever(self) -> None:
        failing: str | None = None  # said once, not every two seconds while it lasts
        while True:
            try:
                await self._sample()
                await self._logs.close_idle()
                failing = None
            except Exception as exc:
                if f"{type(exc).__name__}: {exc}" != failing:
                    failing = f"{type(exc).__name__}: {exc}"
                    log.warning("dashboard_sample_failed", reason=failing)
            await asyncio.sleep(PERIOD)

    async def _sample(self) -> tuple[AppStatus, ...]:
        statuses = await self._registry.statuses(None)
        pools: dict[PoolRef, PoolStats] = {
            (status.environment, status.instance, key): stats
            for status in statuses
            for key, stats in status.functions.items()
        }
        self._history.record(time.time(), pools)
        self._latest = statuses
        return statuses

    # -- routes ------------------------------------------------------------------------

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.access.allows(request):
                return refused(request)
            try:
                return await handler(request)
            except BadQuery as exc:
                return _json({"error": str(exc)}, status=400)

        return guarded

    async def _page(self, request: web.Request) -> web.StreamResponse:
        login = self.access.login(request)
        if login is not None:
            return login
        if not self.access.allows(request):
            return refused(request)
        page = await asyncio.to_thread((STATIC / "index.html").read_bytes)
        return web.Response(body=page, content_type="text/html", headers=HEADERS)

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        kind = FILES.get(name)
        if kind is None:
            return _json({"error": f"no file {name!r}"}, status=404)
        body = await asyncio.to_thread((STATIC / name).read_bytes)
        return web.Response(body=body, content_type=kind, headers=HEADERS)

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        statuses = self._latest if self._latest is not None else await self._sample()
        body = overview(
            statuses,
            local_node=self._local_node,
            web_url=self._web_url,
            failures=self._failure_count,
        )
        body["sampled_every"] = PERIOD
        return _json(body)

    async def _chart(self, request: web.Request) -> web.StreamResponse:
        pool = _pool_ref(request, required=False)
        points = [point.as_dict() for point in self._history.points(pool)]
        return _json({"period": PERIOD, "window": self._history.window, "points": points})

    async def _failures(self, request: web.Request) -> web.StreamResponse:
        pool = _pool_ref(request, required=False)
        statuses = self._latest or ()
        refs = (
            [pool]
            if pool
            else [(s.environment, s.instance, k) for s in statuses for k in s.functions]
        )
        found: list[dict[str, Any]] = []
        for environment, instance, key in refs:
            failures = self._registry.failure_log(environment, instance, key)
            where = {"environment": environment, "instance": instance, "function": key}
            for attempt in failures.recent() if failures is not None else ():
                found.append({**where, **attempt.as_dict()})
        found.sort(key=lambda item: float(item["time"]), reverse=True)
        return _json({"failures": found[:FAILURES_SHOWN]})

    async def _log_tail(self, request: web.Request) -> web.StreamResponse:
        pool = _pool_ref(request, required=True)
        assert pool is not None
        environment, instance, key = pool
        found = self._registry.function(environment, instance, key)
        if found is None:  # no stream is read for a name nothing here has
            return _json({"error": f"no function {instance}.{key} in {environment}"}, status=404)
        tag = found[1].tag
        lines = await self._logs.lines(environment, instance, tag)
        return _json({"function": tag, "lines": [line.as_dict() for line in lines]})

    async def _dead_letter_panel(self, request: web.Request) -> web.StreamResponse:
        environment = _name(request, "environment", self._registry.settings.environment)
        return _json(await panel(self._dead_letters, environment, DEAD_LETTERS_SHOWN))

    # -- what the overview adds ----------------------------------------------------------

    def _web_url(self, ref: PoolRef) -> str | None:
        found = self._registry.function(*ref)
        base = self._base_url()
        if found is None or found[1].web is None or not base:
            return None
        return f"{base}/{ref[0]}/{ref[1]}/{ref[2]}"

    def _failure_count(self, ref: PoolRef) -> int | None:
        failures = self._registry.failure_log(*ref)
        return failures.total if failures is not None else None
