"""The HTTP gateway: web endpoints served by the engine, JSON in and JSON out.

``GET|POST {public url}/{environment}/{app instance}/{function}``: the request becomes
the function's keyword arguments (query string or JSON object), the call goes through
the broker like any other, and the container answers with JSON (never a pickle: the
gateway does not unpickle anything). Bad input is a 4xx with a JSON error; an
exception in the function is a 500 whose body carries the exception's type, message
and traceback only when the engine runs with ``WARREN_HTTP_DEBUG=1``.

``GET {public url}/metrics``: the engine's Prometheus metrics
(:mod:`warren_engine.pool.metrics`). Open to anyone only with ``WARREN_METRICS_PUBLIC=1``;
otherwise a request must bear the dashboard token (``Authorization: Bearer <token>``),
and gets a 401 without it.

The engine's dashboard (:mod:`warren_engine.daemon.dashboard`), when it has one, is served
at ``/`` and under ``/_dashboard/``, which no web endpoint's path can be.

``GET {public url}/healthz``: 200 while the engine's broker connection is up and its
control plane consumes, else 503 (:mod:`warren_engine.daemon.health`); no token, no data.

A daemon given no port serves on the one it last served on (recorded in its state
directory), so deployed endpoints keep their URLs across restarts; a fresh free port if
that one is taken now.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import orjson
import structlog
from aiohttp import web
from warren.client.connection import Client
from warren.client.invocation import Target, call_raw
from warren.exceptions import MessageTooLargeError, NotFoundError, SerializationError, WarrenError
from warren.wire import failure
from warren.wire.codec import FORMAT_JSON
from warren.wire.protocol import STATUS_ERROR, STATUS_OK
from warren.wire.spec import ParamKind, WebEndpoint

from warren_engine.daemon.app_registry import AppRegistry
from warren_engine.daemon.dashboard.access import authorized
from warren_engine.daemon.dashboard.dashboard import Dashboard
from warren_engine.daemon.health import Health
from warren_engine.pool.metrics import CONTENT_TYPE, EngineMetrics

log = structlog.get_logger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


@dataclass(frozen=True, slots=True)
class EndpointPath:
    """The function a request's path names: ``/{environment}/{instance}/{tag}``."""

    environment: str
    instance: str
    tag: str

    ROUTE: ClassVar[str] = "/{environment}/{instance}/{tag}"

    @classmethod
    def of(cls, request: web.Request) -> EndpointPath:
        info = request.match_info  # the ROUTE's parts, by name
        return cls(info["environment"], info["instance"], info["tag"])


def _convert(name: str, kind: ParamKind, raw: str) -> Any:
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise BadRequest(422, f"parameter {name!r} must be {kind}, got {raw!r}") from None
    if kind == "bool":
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise BadRequest(422, f"parameter {name!r} must be true or false, got {raw!r}")
    return raw


async def arguments(request: web.Request, endpoint: WebEndpoint) -> dict[str, Any]:
    """The call's keyword arguments from the query string (GET) or JSON body (POST)."""
    kinds = endpoint.kinds()
    if request.method == "GET":
        kwargs = {
            name: _convert(name, kinds.get(name, ""), value)
            for name, value in request.query.items()
        }
    else:
        try:
            kwargs = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise BadRequest(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(kwargs, dict):
            raise BadRequest(422, "the body must be a JSON object of the function's arguments")
    unknown = set(kwargs) - set(kinds)
    if unknown and not endpoint.var_keyword:
        raise BadRequest(422, f"unexpected parameters: {', '.join(sorted(unknown))}")
    missing = [name for name in endpoint.required if name not in kwargs]
    if missing:
        raise BadRequest(422, f"missing parameters: {', '.join(missing)}")
    return kwargs


class Gateway:
    def __init__(
        self,
        registry: AppRegistry,
        client: Client,
        bind: str,
        port: int,
        public_url: str | None,
        *,
        debug: bool = False,
        port_record: Path | None = None,
        metrics: EngineMetrics | None = None,
        metrics_public: bool = False,
        token: str | None = None,
        dashboard: Dashboard | None = None,
        health: Health | None = None,
    ) -> None:
        self._registry = registry
        self._client = client
        self._bind = bind
        self._port = port
        self._public_url = public_url
        self._debug = debug  # a failed call's response carries its error type and traceback
        self._port_record = port_record  # where the port served on is kept, if anywhere
        self._metrics = metrics
        self._metrics_public = metrics_public
        self._token = token  # what a request for the engine's own pages must bear
        self._dashboard = dashboard  # served at / and under /_dashboard/, if any
        self._health = health
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> str:
        """Listen; the public base URL of the endpoints."""
        application = web.Application(client_max_size=self._client.signer.max_size)
        if self._metrics is not None:
            application.router.add_get("/metrics", self._serve_metrics)
        if self._dashboard is not None:
            self._dashboard.mount(application.router)
        if self._health is not None:
            application.router.add_get("/healthz", self._serve_health)
        application.router.add_route("*", EndpointPath.ROUTE, self._handle)
        self._runner = web.AppRunner(application, access_log=None)
        await self._runner.setup()
        remembered = self._remembered_port() if self._port == 0 else None
        try:
            await self._listen(remembered or self._port)
        except OSError as exc:
            if remembered is None:
                # Another engine on this host has the port: this one runs without web endpoints.
                log.error("http_gateway_not_started", port=self._port, reason=str(exc))
                return ""
            log.warning("http_port_taken", port=remembered, reason=str(exc))
            await self._listen(0)
        port = self._runner.addresses[0][1]
        self.base_url = (self._public_url or f"http://{self._bind}:{port}").rstrip("/")
        log.info("http_gateway_started", url=self.base_url)
        self._remember_port(port)
        return self.base_url

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self._bind, port)
        try:
            await site.start()
        except OSError:
            await site.stop()  # the runner forgets it: a fresh port may be tried next
            raise

    def _remembered_port(self) -> int | None:
        if self._port_record is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            port = int(self._port_record.read_text())
            if 0 < port <= 65535:
                return port
        return None

    def _remember_port(self, port: int) -> None:
        if self._port_record is None:
            return
        staged = self._port_record.with_suffix(".tmp")
        try:
            self._port_record.parent.mkdir(parents=True, exist_ok=True)
            staged.write_text(f"{port}\n")
            os.replace(staged, self._port_record)
        except OSError as exc:
            log.warning("http_port_not_recorded", path=str(self._port_record), reason=str(exc))

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _serve_metrics(self, request: web.Request) -> web.Response:
        assert self._metrics is not None
        if not self._metrics_public and not (self._token and authorized(request, self._token)):
            return web.Response(
                status=401,
                text="the engine's metrics need its dashboard token "
                "(Authorization: Bearer <WARREN_DASHBOARD_TOKEN>), "
                "unless it runs with WARREN_METRICS_PUBLIC=1\n",
                headers={"WWW-Authenticate": 'Bearer realm="warren"'},
            )
        return web.Response(body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def _serve_health(self, request: web.Request) -> web.Response:
        assert self._health is not None
        if self._health.ok:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="unavailable\n")

    async def _handle(self, request: web.Request) -> web.Response:
        path = EndpointPath.of(request)
        found = self._registry.function(path.environment, path.instance, path.tag)
        app, spec = found if found is not None else (None, None)
        if app is None or spec is None or spec.web is None:
            return _json(404, {"error": f"no web endpoint at {request.path}"})
        if request.method != spec.web.method:
            return _json(405, {"error": f"{request.method} is not allowed: use {spec.web.method}"})
        try:
            kwargs = await arguments(request, spec.web)
        except BadRequest as exc:
            return _json(exc.status, {"error": str(exc)})
        target = Target(app.environment, app.app, app.instance, spec)
        try:
            status, fmt, data = await call_raw(self._client, target, (), kwargs, json_results=True)
        except MessageTooLargeError as exc:
            return _json(413, {"error": str(exc)})
        except (SerializationError, RecursionError, ValueError) as exc:
            return _json(422, {"error": f"the arguments cannot be sent: {exc}"})
        except NotFoundError as exc:
            return _json(404, {"error": str(exc)})
        except WarrenError as exc:
            log.warning("web_call_failed", function=path.tag, reason=str(exc))
            return _json(503, {"error": "the function could not be called"})
        if status == STATUS_OK and fmt == FORMAT_JSON:
            return web.Response(body=data, content_type="application/json")
        body: dict[str, Any] = {"error": "the function raised an exception"}
        if self._debug and status == STATUS_ERROR:
            body.update(failure.describe(data))
        return _json(500, body)
