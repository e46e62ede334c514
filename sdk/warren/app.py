"""``App``: a named group of functions that run, deploy and stop together."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, Unpack, overload

from warren import web
from warren.client.app_run import AppCode, RunHandle, deploy_app, start_run, stop_run
from warren.client.connection import Client
from warren.client.facade import Method, run_blocking
from warren.client.log_printer import LogPrinter
from warren.client.log_reader import LogReader
from warren.config import settings
from warren.exceptions import InvalidError
from warren.function import Definition, Function
from warren.options import FunctionOptions, check_options
from warren.wire import naming
from warren.wire.code_bundle import ship_by_value
from warren.wire.spec import FunctionSpec

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


class Deploy(Protocol):
    """The type of ``app.deploy``: blocking, with an ``.aio`` twin."""

    def __call__(self, name: str | None = None) -> App: ...

    def aio(self, name: str | None = None) -> Coroutine[Any, Any, App]: ...


class App:
    """A named group of functions.

    Example::

        app = warren.App("hello")

        @app.function(max_containers=2)
        def greet(name: str) -> str:
            return f"hello {name}"

        with app.run():                     # or: async with app.run():
            print(greet.remote("world"))
    """

    def __init__(self, name: str, *, environment: str | None = None) -> None:
        self.name = naming.check_part("app name", name)
        self._environment = (
            naming.check_part("environment", environment) if environment is not None else None
        )
        self.functions: dict[str, Function[Any, Any]] = {}
        self.local_entrypoints: dict[str, Callable[..., Any]] = {}
        self.module_name: str | None = None
        self._run: RunHandle | None = None

    @property
    def environment(self) -> str:
        if self._run is not None:
            return self._run.environment
        return self._environment or settings().environment

    @property
    def instance_name(self) -> str:
        """Name the app's queues carry: its ephemeral run's while running, else its own."""
        return self._run.instance if self._run is not None else self.name

    @property
    def is_running(self) -> bool:
        return self._run is not None

    @overload
    def function(
        self, raw: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Function[P, R, Coroutine[Any, Any, R]]: ...

    @overload
    def function(self, raw: Callable[P, R], /) -> Function[P, R, R]: ...

    @overload
    def function(
        self, raw: None = None, /, *, name: str | None = None, **options: Unpack[FunctionOptions]
    ) -> _Decorator: ...

    def function(
        self,
        raw: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        **options: Unpack[FunctionOptions],
    ) -> Any:
        """Register a function of this app: ``@app.function()`` or ``@app.function``.

        ``name`` is the function's name in the app (default: its own). Containers scale
        with the load, from ``min_containers`` (kept warm, default 0) up to
        ``max_containers`` (default: as many as the engine node has cores, so that a
        CPU-bound map uses the machine; set it to bound the function's concurrency
        exactly); ``buffer_containers`` (default 0) extra idle ones are kept while the
        function is busy, and an idle container above the minimum stops after
        ``scaledown_window`` seconds (default 60). ``max_inputs`` is how many inputs one
        container runs at once (its prefetch, default 1), so ``max_containers *
        max_inputs`` bounds the function's concurrency. ``timeout`` is in seconds per
        attempt (default 300). ``retries`` (an ``int`` or :class:`~warren.Retries`)
        runs a failed or timed-out input again after a backoff, on the engine side. The
        resource and placement options of :meth:`Function.with_options` (``cpu``,
        ``memory``, ``gpu``, ``env``, ``secrets``, ``volumes``, ``region``, ``cloud``)
        are accepted here too; :class:`~warren.options.FunctionOptions` lists them all.
        """
        fields = check_options(**options)

        def decorate(fn: Callable[..., Any]) -> Function[Any, Any]:
            if isinstance(fn, Function):
                raise InvalidError(f"{fn.tag} is already a Warren function")
            if not callable(fn):
                raise InvalidError(f"@app.function() needs a function, got {fn!r}")
            tag = naming.check_part("function name", name or fn.__name__)
            if tag in self.functions:
                raise InvalidError(f"app {self.name!r} already has a function named {tag!r}")
            spec = FunctionSpec(
                tag=tag,
                is_async=inspect.iscoroutinefunction(fn),
                web=getattr(fn, web.ATTRIBUTE, None),
                **fields,
            )
            function: Function[Any, Any] = Function(Definition(self, fn, spec))
            self.functions[tag] = function
            self.module_name = self.module_name or fn.__module__
            ship_by_value(fn.__module__)
            return function

        if raw is not None:
            return decorate(raw)
        return decorate

    def local_entrypoint(self, name: str | None = None) -> Callable[[F], F]:
        """Mark the function ``warren run`` calls (inside ``app.run()``) for this app."""

        def decorate(fn: F) -> F:
            self.local_entrypoints[name or fn.__name__] = fn
            self.module_name = self.module_name or fn.__module__
            return fn

        return decorate

    def run(self, *, show_output: bool = True) -> AppRun:
        """Run the app ephemerally for the duration of a ``with`` (or ``async with``) block.

        If an engine daemon is listening the app is registered with it; otherwise an
        engine is started as a child process and stopped with the app. The app's queues
        are removed when the block ends. While it runs, what its functions print (and
        log) is written to this process's stdout and stderr, each line prefixed with
        the function's name; ``show_output=False`` leaves it out (``warren run --quiet``).
        """
        return AppRun(self, show_output=show_output)

    @property
    def deploy(self) -> Deploy:
        """Deploy the app to the engine daemon: ``app.deploy()`` (``await app.deploy.aio()``).

        Registers the app, or replaces its code for new inputs if it is deployed
        already (which also resets ``update_autoscaler`` overrides). ``name`` deploys
        it under another name. Needs a running ``warren engine``.
        """
        return Method(self._deploy, "app.deploy")

    async def _deploy(self, name: str | None = None) -> App:
        await deploy_app(await Client.current(), self.code().pack(), name)
        return self

    def code(self) -> AppCode:
        """What an engine is sent to run this app: its functions' specs and code."""
        return AppCode(
            self.name,
            self.environment,
            tuple(function.spec for function in self.functions.values()),
            {tag: function.get_raw_f() for tag, function in self.functions.items()},
        )

    def _attach(self, handle: RunHandle | None) -> None:
        self._run = handle

    def __reduce__(self) -> tuple[Callable[..., App], tuple[str, str | None]]:
        # Pickled inside a function's globals: a light handle, never the registry itself.
        return (App, (self.name, self._environment))

    def __repr__(self) -> str:
        return f"<warren.App {self.name}>"


class _Decorator:
    """Typing aid: what ``@app.function(...)`` returns."""

    @overload
    def __call__(
        self, raw: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Function[P, R, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, raw: Callable[P, R], /) -> Function[P, R, R]: ...

    def __call__(self, raw: Callable[..., Any], /) -> Any: ...


# How far the clocks of the caller, its containers and the broker may differ (lines carry
# their container's time, the stream finds the broker's): a run's first lines are kept.
CLOCK_SLACK_SECONDS = 2.0
OUTPUT_IDLE_SECONDS = 0.2
OUTPUT_DRAIN_SECONDS = 1.0


class AppRun:
    """Context manager returned by :meth:`App.run`; usable with ``with`` and ``async with``."""

    def __init__(self, app: App, *, show_output: bool = True) -> None:
        self._app = app
        self._show_output = show_output
        self._output: LogReader | None = None

    async def __aenter__(self) -> App:
        if self._app.is_running:
            raise InvalidError(f"app {self._app.name!r} is already running")
        client = await Client.current()
        # Containers start (and may print) before the run's handle comes back.
        started = time.time() - CLOCK_SLACK_SECONDS
        handle = await start_run(client, self._app.code().pack())
        self._app._attach(handle)
        if self._show_output:
            try:
                self._output = LogReader(LogPrinter(), app=handle.instance, since=started)
                await self._output.start(client.session, handle.environment)
            except BaseException:
                self._app._attach(None)
                await stop_run(client, handle)
                raise
        return self._app

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        handle = self._app._run
        self._app._attach(None)
        output, self._output = self._output, None
        try:
            if handle is not None:
                await stop_run(handle.client, handle)
        finally:
            if output is not None:
                # Stopping containers publish their last lines: room for them to arrive.
                await output.quiet(OUTPUT_IDLE_SECONDS, OUTPUT_DRAIN_SECONDS)
                await output.close()

    def __enter__(self) -> App:
        return run_blocking(self.__aenter__, "app.run")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run_blocking(lambda: self.__aexit__(exc_type, exc, tb), "app.run")
