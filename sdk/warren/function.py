"""``Function``: a handle on a function that runs in containers behind the broker.

A handle finds where its calls go through a small *locator*:

* :class:`Definition`: decorated in this process (``@app.function()``); it has the
  code, and its calls go to the app's running instance, else to the deployed app;
* :class:`Reference`: a known place and no code, what a ``Function`` referenced from
  another function's globals becomes in a container;
* :class:`ByName`: a deployed function named by environment, app and tag
  (``Function.from_name``), asked of the engine on first use.

``with_options`` adds overrides to a handle: its calls go to the variant the engine
makes of them, asked for on first use and asked again if a redeploy removed it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, Unpack

import typing_extensions

from warren.client.connection import Client
from warren.client.facade import Method, in_running_loop
from warren.client.invocation import NotRunningError, Target, call_one
from warren.client.mapping import MapMethods
from warren.config import settings
from warren.exceptions import BlockingCallInLoopError, ExecutionError, InvalidError
from warren.function_call import FunctionCall, spawn_call
from warren.options import VariantOptions, check_variant_options
from warren.wire import naming
from warren.wire.control import (
    AutoscalerChanges,
    DescribeFunction,
    EnsureVariant,
    FunctionStats,
    PoolName,
    Request,
    UpdateAutoscaler,
)
from warren.wire.spec import FunctionSpec

if TYPE_CHECKING:
    from warren.app import App

P = ParamSpec("P")
# Covariant, so that a `Function[[int], int]` is a `Function[..., object]`.
R = TypeVar("R", covariant=True)
# What `local` returns: the function's own return type, a coroutine of R for `async def`.
# Any when not given, so that `Function[[int], int]` names sync and async functions alike.
# (A default needs typing_extensions before Python 3.13; aiohttp depends on it there.)
L = typing_extensions.TypeVar("L", covariant=True, default=Any)
V = TypeVar("V")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Definition(Generic[P, V]):
    """A function decorated in this process: its code, its spec and its app."""

    app: App
    raw: Callable[P, V]
    spec: FunctionSpec

    @property
    def tag(self) -> str:
        return self.spec.tag

    def current(self) -> Target:
        run = self.app._run
        web_base = run.web_base if run is not None else ""
        return Target(
            self.app.environment, self.app.name, self.app.instance_name, self.spec, web_base
        )

    async def find(self, client: Client) -> Target:
        return self.current()

    def control_queue(self) -> str:
        run = self.app._run
        return run.control_queue if run is not None else naming.control_queue(self.app.environment)


@dataclass(frozen=True, slots=True)
class Reference:
    """A function at a known place, without its code."""

    target: Target

    @property
    def tag(self) -> str:
        return self.target.spec.tag

    def current(self) -> Target:
        return self.target

    async def find(self, client: Client) -> Target:
        return self.target

    def control_queue(self) -> str:
        return naming.control_queue(self.target.environment)


@dataclass(slots=True)
class ByName:
    """A deployed function, by name; where it runs is asked of the engine once."""

    environment: str
    app: str
    tag: str
    found: Target | None = None

    def current(self) -> Target | None:
        return self.found

    async def find(self, client: Client) -> Target:
        if self.found is None:
            found = await client.control(DescribeFunction(self.environment, self.app, self.tag))
            self.found = Target(
                self.environment, self.app, found.instance, found.spec, found.web_base
            )
        return self.found

    def control_queue(self) -> str:
        return naming.control_queue(self.environment)


class AutoscalerUpdate(Protocol):
    """The type of ``f.update_autoscaler``: blocking, with an ``.aio`` twin."""

    def __call__(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        scaledown_window: float | None = None,
        buffer_containers: int | None = None,
    ) -> None: ...

    def aio(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        scaledown_window: float | None = None,
        buffer_containers: int | None = None,
    ) -> Coroutine[Any, Any, None]: ...


class Function(MapMethods[P, R], Generic[P, R, L]):
    """A function that runs remotely. Made by ``@app.function()``.

    ``Function[P, R]`` takes the parameters ``P`` and returns ``R`` remotely (an
    ``async def`` function's ``R`` is what its coroutine returns); the third parameter
    is what :meth:`local` returns: ``R``, or a coroutine of ``R`` for ``async def``
    (``Any`` if not given). Example::

        app = warren.App("demo")

        @app.function()
        def square(x: int) -> int:
            return x * x

        with app.run():
            assert square.remote(4) == 16
            assert square.local(4) == 16
    """

    def __init__(
        self,
        where: Definition[P, L] | Reference | ByName,
        *,
        client: Client | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self._where = where
        self._explicit_client = client
        self._overrides = overrides or {}
        self._variant: Target | None = None
        if isinstance(where, Definition):
            raw = where.raw
            self.__doc__ = raw.__doc__
            self.__name__ = getattr(raw, "__name__", self.tag)
            self.__qualname__ = getattr(raw, "__qualname__", self.tag)
            self.__module__ = getattr(raw, "__module__", __name__)

    @classmethod
    def from_name(
        cls,
        app_name: str,
        tag: str,
        *,
        environment_name: str | None = None,
        client: Client | None = None,
    ) -> Function[..., Any]:
        """A lazy handle on a deployed function; nothing is looked up until it is used.

        The first call that needs the function asks the engine for it (``hydrate``),
        and raises ``NotFoundError`` naming the app, function and environment when it
        is not deployed. ``client`` makes the handle use your own connection::

            f = warren.Function.from_name("billing", "charge")
            f.remote(order)                       # or: await f.remote.aio(order)
        """
        environment = naming.check_part(
            "environment",
            environment_name or (client.environment if client else None) or settings().environment,
        )
        where = ByName(
            environment,
            naming.check_part("app name", app_name),
            naming.check_part("function name", tag),
        )
        return Function(where, client=client)

    @property
    def tag(self) -> str:
        return self._where.tag

    @property
    def spec(self) -> FunctionSpec:
        return self.target().spec

    @property
    def is_hydrated(self) -> bool:
        found = self._where.current() is not None
        return found and (not self._overrides or self._variant is not None)

    def target(self) -> Target:
        """Where calls go now: the app's running instance, else the deployed app."""
        if self._overrides:
            if self._variant is None:
                raise ExecutionError(
                    f"{self.tag} with options is not created yet: call it, or `f.hydrate()` "
                    "(`await f.hydrate.aio()` in async code) first"
                )
            return self._variant
        return self._base_target()

    def _base_target(self) -> Target:
        target = self._where.current()
        if target is None:
            raise ExecutionError(
                f"{self.tag} is not hydrated yet: call it, or `f.hydrate()` "
                "(`await f.hydrate.aio()` in async code) first"
            )
        return target

    @property
    def web_url(self) -> str | None:
        """The URL of this web endpoint (``@warren.web_endpoint``); ``None`` for other functions.

        On a ``from_name`` handle, reading it looks the function up first: in async code,
        call ``await f.hydrate.aio()`` before reading it.
        """
        if not self.is_hydrated:
            if in_running_loop():
                raise BlockingCallInLoopError(
                    f"{self.tag}.web_url needs the function looked up first, which blocks: "
                    f"call `await f.hydrate.aio()` before reading it in async code"
                )
            self.hydrate()
        return self.target().web_url

    @property
    def hydrate(self) -> Method[[], Function[P, R, L]]:
        """Look the function up now (a ``from_name`` handle does it on first use anyway)."""
        return Method(self._hydrate, f"{self.tag}.hydrate")

    async def _hydrate(self) -> Function[P, R, L]:
        await self._resolve(await self._client())
        return self

    async def _client(self) -> Client:
        if self._explicit_client is not None:
            return self._explicit_client
        return await Client.current()

    async def _resolve(self, client: Client) -> Target:
        base = await self._where.find(client)
        if not self._overrides:
            return base
        if self._variant is not None and self._variant.instance == base.instance:
            return self._variant
        asked = EnsureVariant(base.environment, base.instance, self.tag, self._overrides)
        found = await client.control(asked, queue=self._where.control_queue())
        self._variant = Target(base.environment, base.app, base.instance, found.spec, base.web_base)
        return self._variant

    async def _send(self, send: Callable[[Client, Target], Awaitable[T]]) -> T:
        """``send`` to where calls go; once more if the variant's queue went (a redeploy
        resets variants), to the variant made again."""
        client = await self._client()
        try:
            return await send(client, await self._resolve(client))
        except NotRunningError:
            if self._variant is None:
                raise
            self._variant = None
            return await send(client, await self._resolve(client))

    def with_options(self, **options: Unpack[VariantOptions]) -> Function[P, R, L]:
        """A variant of this function with its own queue and its own autoscaled pool.

        Takes the options of ``@app.function()`` but ``max_inputs`` and
        ``min_containers``. Options not given keep this function's values; calls stack
        (``f.with_options(timeout=5).with_options(max_containers=1)`` has both). Two
        identical option sets share one variant, made by the engine on first use.
        ``env`` values of ``None`` unset a variable. Works on a ``from_name`` handle::

            big = process.with_options(memory=(2048, 4096), max_containers=2)
            big.remote(batch)
        """
        if not options.get("volumes", True):
            del options["volumes"]  # no mounts given: the original's stay
        fields = check_variant_options(**options)
        overrides = {**self._overrides, **fields}
        return Function(self._where, client=self._explicit_client, overrides=overrides)

    async def _control(self, request: Callable[[PoolName], Request[T]]) -> T:
        # ``request`` makes the operation for this function's pool, once it is resolved.
        client = await self._client()
        target = await self._resolve(client)
        pool = PoolName(target.environment, target.instance, self.tag, target.spec.variant)
        return await client.control(request(pool), queue=self._where.control_queue())

    @property
    def update_autoscaler(self) -> AutoscalerUpdate:
        """Change the live pool at once: ``f.update_autoscaler(max_containers=1)``.

        Takes ``min_containers``, ``max_containers``, ``scaledown_window`` and
        ``buffer_containers``; unspecified values stay. The change survives an engine
        restart, and the next deploy resets it to the decorator's values. Lowering
        ``max_containers`` lets the extra containers finish their inputs, then stop.
        """
        return Method(self._update_autoscaler, f"{self.tag}.update_autoscaler")

    async def _update_autoscaler(
        self,
        *,
        min_containers: int | None = None,
        max_containers: int | None = None,
        scaledown_window: float | None = None,
        buffer_containers: int | None = None,
    ) -> None:
        changes = AutoscalerChanges(
            min_containers, max_containers, buffer_containers, scaledown_window
        )
        await self._control(lambda pool: UpdateAutoscaler(pool, changes))

    @property
    def get_current_stats(self) -> Method[[], dict[str, Any]]:
        """This function's pool now: inputs queued, running and held (taken by a container,
        running or about to start), containers and their pids, autoscaler settings::

            stats = square.get_current_stats()   # {"queued_inputs": 0, "running_inputs": 2, ...}
        """
        return Method(self._get_current_stats, f"{self.tag}.get_current_stats")

    async def _get_current_stats(self) -> dict[str, Any]:
        return (await self._control(FunctionStats)).as_dict()

    @property
    def remote(self) -> Method[P, R]:
        """Run remotely and wait for the result: ``f.remote(x)`` or ``await f.remote.aio(x)``."""
        return Method(self._remote, f"{self.tag}.remote")

    async def _remote(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = await self._send(lambda client, target: call_one(client, target, args, kwargs))
        return result

    @property
    def spawn(self) -> Method[P, FunctionCall[R]]:
        """Queue a call and return at once with a :class:`FunctionCall` for its result.

        The input is durably queued when ``spawn`` returns; the result is kept in the
        broker for any process to fetch with ``FunctionCall.from_id(call.object_id)``.
        """
        return Method(self._spawn, f"{self.tag}.spawn")

    async def _spawn(self, *args: P.args, **kwargs: P.kwargs) -> FunctionCall[R]:
        return await self._send(lambda client, target: spawn_call(client, target, args, kwargs))

    def local(self, *args: P.args, **kwargs: P.kwargs) -> L:
        """Run in this process, as a plain call (an async function returns its coroutine)."""
        if not isinstance(self._where, Definition):
            raise InvalidError(
                f"{self.tag}.local() needs the function's code; a handle by name has none"
            )
        return self._where.raw(*args, **kwargs)

    def get_raw_f(self) -> Callable[P, L]:
        if not isinstance(self._where, Definition):
            raise ExecutionError(f"{self.tag} is a reference and has no local code")
        return self._where.raw

    def __reduce__(self) -> tuple[Callable[..., Function[Any, Any]], tuple[Any, ...]]:
        # Referenced from another function's globals, a Function travels as a reference to
        # where it runs, never as a copy of its app and code.
        if self._variant is not None:
            target, overrides = self._variant, {}  # the variant made: its own queue
        elif isinstance(self._where, ByName) and self._where.found is None:
            where = self._where
            return (_function_by_name, (where.app, where.tag, where.environment, self._overrides))
        else:
            target, overrides = self._base_target(), self._overrides
        return (
            _function_reference,
            (target.environment, target.app, target.instance, target.spec.to_wire(), overrides),
        )

    def __repr__(self) -> str:
        return f"<warren.Function {self.tag}>"


def _function_reference(
    environment: str,
    app: str,
    instance: str,
    spec: dict[str, Any],
    overrides: dict[str, Any] | None = None,
) -> Function[Any, Any]:
    target = Target(environment, app, instance, FunctionSpec.from_wire(spec))
    return Function(Reference(target), overrides=overrides)


def _function_by_name(
    app_name: str, tag: str, environment: str, overrides: dict[str, Any] | None = None
) -> Function[Any, Any]:
    return Function(ByName(environment, app_name, tag), overrides=overrides)
