"""``Function``: a handle on a function that runs in containers behind the broker."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from warren.client.connection import Client
from warren.client.facade import Method, in_running_loop
from warren.client.invocation import NotRunningError, Target, call_one
from warren.client.mapping import MapMethods
from warren.config import settings
from warren.exceptions import BlockingCallInLoopError, ExecutionError, InvalidError
from warren.function_call import FunctionCall, spawn_call
from warren.options import check_options
from warren.secrets import Secret
from warren.volumes import Volume
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
from warren.wire.retries import Retries
from warren.wire.spec import FunctionSpec

if TYPE_CHECKING:
    from warren.app import App

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")  # a control reply


class Function(MapMethods[R], Generic[P, R]):
    """A function that runs remotely. Made by ``@app.function()``.

    Example::

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
        raw: Callable[..., Any] | None,
        spec: FunctionSpec | None,
        *,
        app: App | None = None,
        target: Target | None = None,
        lookup: tuple[str, str, str] | None = None,
        client: Client | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self._raw = raw
        self._spec = spec
        self._app = app
        self._target = target
        self._lookup = lookup
        self._explicit_client = client
        self._overrides = overrides or {}
        self._variant: Target | None = None
        if raw is not None:
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
        lookup = (
            environment,
            naming.check_part("app name", app_name),
            naming.check_part("function name", tag),
        )
        return cls(None, None, lookup=lookup, client=client)

    @property
    def tag(self) -> str:
        if self._spec is not None:
            return self._spec.tag
        assert self._lookup is not None
        return self._lookup[2]

    @property
    def spec(self) -> FunctionSpec:
        return self.target().spec

    @property
    def is_hydrated(self) -> bool:
        base = self._lookup is None or self._target is not None
        return base and (not self._overrides or self._variant is not None)

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
        if self._target is not None:
            return self._target
        if self._app is None:
            raise ExecutionError(
                f"{self.tag} is not hydrated yet: call it, or `f.hydrate()` "
                "(`await f.hydrate.aio()` in async code) first"
            )
        assert self._spec is not None
        run = self._app._run
        web_base = run.web_base if run is not None else ""
        return Target(
            self._app.environment, self._app.name, self._app.instance_name, self._spec, web_base
        )

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
    def hydrate(self) -> Method[[], Function[P, R]]:
        """Look the function up now (a ``from_name`` handle does it on first use anyway)."""
        return Method(self._hydrate, f"{self.tag}.hydrate")

    async def _hydrate(self) -> Function[P, R]:
        await self._resolve(await self._client())
        return self

    async def _client(self) -> Client:
        if self._explicit_client is not None:
            return self._explicit_client
        return await Client.current()

    async def _resolve(self, client: Client) -> Target:
        base = await self._resolve_base(client)
        if not self._overrides:
            return base
        if self._variant is not None and self._variant.instance == base.instance:
            return self._variant
        found = await client.control(
            EnsureVariant(base.environment, base.instance, self.tag, self._overrides),
            queue=self._control_queue(),
        )
        self._variant = Target(base.environment, base.app, base.instance, found.spec, base.web_base)
        return self._variant

    async def _resolve_base(self, client: Client) -> Target:
        if self._target is not None or self._lookup is None:
            return self._base_target()
        environment, app_name, tag = self._lookup
        found = await client.control(DescribeFunction(environment, app_name, tag))
        self._target = Target(environment, app_name, found.instance, found.spec, found.web_base)
        return self._target

    def with_options(
        self,
        *,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        gpu: str | None = None,
        env: dict[str, str | None] | None = None,
        secrets: Sequence[Secret] | None = None,
        volumes: dict[str, Volume] | None = None,
        retries: int | Retries | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: float | None = None,
        timeout: float | None = None,
        region: str | Sequence[str] | None = None,
        cloud: str | Sequence[str] | None = None,
    ) -> Function[P, R]:
        """A variant of this function with its own queue and its own autoscaled pool.

        Options not given keep this function's values; calls stack
        (``f.with_options(timeout=5).with_options(max_containers=1)`` has both). Two
        identical option sets share one variant, made by the engine on first use.
        ``env`` values of ``None`` unset a variable. Works on a ``from_name`` handle::

            big = process.with_options(memory=(2048, 4096), max_containers=2)
            big.remote(batch)
        """
        fields = check_options(
            cpu=cpu,
            memory=memory,
            gpu=gpu,
            env=env,
            secrets=secrets,
            volumes=volumes or None,
            retries=retries,
            max_containers=max_containers,
            buffer_containers=buffer_containers,
            scaledown_window=scaledown_window,
            timeout=timeout,
            region=region,
            cloud=cloud,
        )
        return Function(
            self._raw,
            self._spec,
            app=self._app,
            target=self._target,
            lookup=self._lookup,
            client=self._explicit_client,
            overrides={**self._overrides, **fields},
        )

    def _control_queue(self) -> str:
        run = self._app._run if self._app is not None else None
        return run.control_queue if run is not None else naming.control_queue()

    async def _control(self, request: Callable[[PoolName], Request[T]]) -> T:
        # ``request`` makes the operation for this function's pool, once it is resolved.
        client = await self._client()
        target = await self._resolve(client)
        pool = PoolName(target.environment, target.instance, self.tag, target.spec.variant)
        return await client.control(request(pool), queue=self._control_queue())

    @property
    def update_autoscaler(self) -> Method[..., None]:
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
        """Backlog (inputs queued), running inputs and containers of this function, now."""
        return Method(self._get_current_stats, f"{self.tag}.get_current_stats")

    async def _get_current_stats(self) -> dict[str, Any]:
        return (await self._control(FunctionStats)).as_dict()

    @property
    def remote(self) -> Method[P, R]:
        """Run remotely and wait for the result: ``f.remote(x)`` or ``await f.remote.aio(x)``."""
        return Method(self._remote, f"{self.tag}.remote")

    async def _remote(self, *args: P.args, **kwargs: P.kwargs) -> R:
        client = await self._client()
        try:
            result: R = await call_one(client, await self._resolve(client), args, kwargs)
        except NotRunningError:
            if not self._forget_variant():
                raise
            result = await call_one(client, await self._resolve(client), args, kwargs)
        return result

    def _forget_variant(self) -> bool:
        """A variant's queue went (a redeploy resets variants): make it again on next use."""
        if self._variant is None:
            return False
        self._variant = None
        return True

    @property
    def spawn(self) -> Method[P, FunctionCall[R]]:
        """Queue a call and return at once with a :class:`FunctionCall` for its result.

        The input is durably queued when ``spawn`` returns; the result is kept in the
        broker for any process to fetch with ``FunctionCall.from_id(call.object_id)``.
        """
        return Method(self._spawn, f"{self.tag}.spawn")

    async def _spawn(self, *args: P.args, **kwargs: P.kwargs) -> FunctionCall[R]:
        client = await self._client()
        try:
            return await spawn_call(client, await self._resolve(client), args, kwargs)
        except NotRunningError:
            if not self._forget_variant():
                raise
            return await spawn_call(client, await self._resolve(client), args, kwargs)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run in this process, as a plain call (an async function returns its coroutine)."""
        if self._raw is None:
            raise InvalidError(
                f"{self.tag}.local() needs the function's code; a handle by name has none"
            )
        return self._raw(*args, **kwargs)

    def get_raw_f(self) -> Callable[..., Any]:
        if self._raw is None:
            raise ExecutionError(f"{self.tag} is a reference and has no local code")
        return self._raw

    def __reduce__(self) -> tuple[Callable[..., Function[Any, Any]], tuple[Any, ...]]:
        # Referenced from another function's globals, a Function travels as a reference to
        # where it runs, never as a copy of its app and code.
        if self._variant is not None:
            target, overrides = self._variant, {}  # the variant made: its own queue
        elif self._lookup is not None and self._target is None:
            environment, app_name, tag = self._lookup
            return (_function_by_name, (app_name, tag, environment, self._overrides))
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
    parsed = FunctionSpec.from_wire(spec)
    target = Target(environment, app, instance, parsed)
    return Function(None, parsed, target=target, overrides=overrides)


def _function_by_name(
    app_name: str, tag: str, environment: str, overrides: dict[str, Any] | None = None
) -> Function[Any, Any]:
    handle = Function.from_name(app_name, tag, environment_name=environment)
    handle._overrides = overrides or {}
    return handle
