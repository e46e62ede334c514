"""``Function``: a handle on a function that runs in containers behind the broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from sdk import failure, naming
from sdk.client import Client
from sdk.codec import decode_value, encode_call_args
from sdk.exceptions import ExecutionError, InvalidError, NotFoundError
from sdk.facade import Method
from sdk.protocol import STATUS_OK, CallBatch, Cancel, FunctionSpec

if TYPE_CHECKING:
    from sdk.app import App

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a function's inputs go: its environment, app instance and queue."""

    environment: str
    app: str
    instance: str
    spec: FunctionSpec

    @property
    def queue(self) -> str:
        return naming.function_queue(self.environment, self.instance, self.spec.tag)

    @property
    def display_name(self) -> str:
        return f"{self.app}.{self.spec.tag}"


def outcome(status: int, fmt: int, data: bytes, function_name: str) -> Any:
    """The value of one result, or raise the exception it carries."""
    if status == STATUS_OK:
        return decode_value(fmt, data, what=f"the result of {function_name}")
    raise failure.rebuild(data, function_name)


class _OneResult:
    """Sink for a single call: resolves one future, counts duplicates."""

    __slots__ = ("duplicates", "future")

    def __init__(self, future: asyncio.Future[tuple[int, int, bytes]]) -> None:
        self.future = future
        self.duplicates = 0

    def deliver(self, index: int, status: int, fmt: int, data: bytes, duration: float) -> None:
        if self.future.done():
            self.duplicates += 1
        else:
            self.future.set_result((status, fmt, data))

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


async def publish_cancel(client: Client, invocation_ids: list[str]) -> None:
    """Tell every container of the environment to drop these invocations' inputs."""
    await client.broadcast(naming.cancel_exchange(client.environment), Cancel(invocation_ids))


async def call_one(
    client: Client, target: Target, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    fmt, data = encode_call_args(args, kwargs)
    invocation_id = uuid.uuid4().hex
    future: asyncio.Future[tuple[int, int, bytes]] = asyncio.get_running_loop().create_future()
    client.add_sink(invocation_id, _OneResult(future))
    try:
        await client.publish(
            target.queue,
            CallBatch(invocation_id, [(0, fmt, data)]).to_envelope(),
            correlation_id=invocation_id,
        )
        status, rfmt, rdata = await future
    except NotFoundError:
        raise _not_running(target) from None
    except asyncio.CancelledError:
        await asyncio.shield(publish_cancel(client, [invocation_id]))
        raise
    finally:
        client.remove_sink(invocation_id)
    return outcome(status, rfmt, rdata, target.display_name)


def _not_running(target: Target) -> NotFoundError:
    return NotFoundError(
        f"function {target.display_name!r} is not running in environment "
        f"{target.environment!r}: start its app with `with app.run():` (or `warren run`) "
        "or deploy it"
    )


class Function(Generic[P, R]):
    """A function that runs remotely. Made by ``@app.function()``.

    Example::

        app = sdk.App("demo")

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
        spec: FunctionSpec,
        *,
        app: App | None = None,
        target: Target | None = None,
    ) -> None:
        self._raw = raw
        self.spec = spec
        self._app = app
        self._target = target
        if raw is not None:
            self.__doc__ = raw.__doc__
            self.__name__ = getattr(raw, "__name__", spec.tag)
            self.__qualname__ = getattr(raw, "__qualname__", spec.tag)
            self.__module__ = getattr(raw, "__module__", __name__)

    @property
    def tag(self) -> str:
        return self.spec.tag

    def target(self) -> Target:
        """Where calls go now: the app's running instance, else the deployed app."""
        if self._target is not None:
            return self._target
        assert self._app is not None
        return Target(self._app.environment, self._app.name, self._app.instance_name, self.spec)

    @property
    def remote(self) -> Method[P, R]:
        """Run remotely and wait for the result: ``f.remote(x)`` or ``await f.remote.aio(x)``."""
        return Method(self._remote, f"{self.tag}.remote")

    async def _remote(self, *args: P.args, **kwargs: P.kwargs) -> R:
        client = await Client.current()
        result: R = await call_one(client, self.target(), args, kwargs)
        return result

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
        target = self.target()
        return (
            _function_reference,
            (target.environment, target.app, target.instance, target.spec.to_wire()),
        )

    def __repr__(self) -> str:
        return f"<warren.Function {self.tag}>"


def _function_reference(
    environment: str, app: str, instance: str, spec: dict[str, Any]
) -> Function[Any, Any]:
    parsed = FunctionSpec.from_wire(spec)
    return Function(None, parsed, target=Target(environment, app, instance, parsed))
