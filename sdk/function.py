"""``Function``: a handle on a function that runs in containers behind the broker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from sdk.calls import FunctionCall, spawn_call
from sdk.client import Client
from sdk.exceptions import ExecutionError, InvalidError
from sdk.facade import IteratorMethod, Method
from sdk.inputs import AnyIterable, InputSource, zip_inputs
from sdk.invocation import Target, call_one
from sdk.mapping import map_chunks
from sdk.protocol import FunctionSpec

if TYPE_CHECKING:
    from sdk.app import App

P = ParamSpec("P")
R = TypeVar("R")


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

    @property
    def spawn(self) -> Method[P, FunctionCall[R]]:
        """Queue a call and return at once with a :class:`FunctionCall` for its result.

        The input is durably queued when ``spawn`` returns; the result is kept in the
        broker for any process to fetch with ``FunctionCall.from_id(call.object_id)``.
        """
        return Method(self._spawn, f"{self.tag}.spawn")

    async def _spawn(self, *args: P.args, **kwargs: P.kwargs) -> FunctionCall[R]:
        client = await Client.current()
        return await spawn_call(client, self.target(), args, kwargs)

    @property
    def map(self) -> IteratorMethod[..., R]:
        """Run once per item of the zipped iterables; iterate the results.

        ``f.map(xs, ys, kwargs={"k": 1})`` calls ``f(x, y, k=1)`` for each pair (the
        shortest iterable ends the map). ``order_outputs=True`` yields results in input
        order, ``False`` as they complete. With ``return_exceptions=True`` a failed
        input yields its exception (its own type) instead of raising; otherwise the
        first failure raises and the map's remaining inputs are cancelled.

        Inputs are read lazily (generators welcome, even infinite ones: ``break``
        cancels what is left); ``f.map.aio(...)`` is an async iterator that also takes
        async iterables::

            for square in f.map(range(1000)):
                ...
            async for square in f.map.aio(numbers()):
                ...
        """
        return IteratorMethod(self._map, f"{self.tag}.map")

    @property
    def starmap(self) -> IteratorMethod[..., R]:
        """Like :attr:`map`, but each item is a tuple of positional arguments.

        ``list(f.starmap([(1, 2), (3, 4)]))`` is ``[f(1, 2), f(3, 4)]``.
        """
        return IteratorMethod(self._starmap, f"{self.tag}.starmap")

    @property
    def for_each(self) -> IteratorMethod[..., R]:
        """Call the function once per item (the item is its single argument).

        Returns an iterator of results as they complete (``order_outputs=True`` for
        input order). Unlike Modal's ``for_each``, which blocks and returns ``None``,
        Warren's is driven by iteration like ``map``: nothing runs until you iterate
        it, and an iterator dropped unused warns that nothing ran. To run for side
        effects only: ``for _ in f.for_each(items): pass``.
        """
        return IteratorMethod(self._for_each, f"{self.tag}.for_each", warn_unused=True)

    async def _map(
        self,
        *input_iterators: AnyIterable,
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> AsyncIterator[list[Any]]:
        if not input_iterators:
            raise InvalidError(f"{self.tag}.map() needs at least one iterable of inputs")
        async for chunk in self._run_map(
            zip_inputs(input_iterators), kwargs, order_outputs, return_exceptions
        ):
            yield chunk

    async def _starmap(
        self,
        input_iterator: AnyIterable,
        *,
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> AsyncIterator[list[Any]]:
        async for chunk in self._run_map(input_iterator, kwargs, order_outputs, return_exceptions):
            yield chunk

    async def _for_each(
        self,
        input_iterator: AnyIterable,
        *,
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = False,
        return_exceptions: bool = False,
    ) -> AsyncIterator[list[Any]]:
        async for chunk in self._run_map(
            zip_inputs((input_iterator,)), kwargs, order_outputs, return_exceptions
        ):
            yield chunk

    async def _run_map(
        self,
        rows: AnyIterable,
        kwargs: dict[str, Any] | None,
        order_outputs: bool,
        return_exceptions: bool,
    ) -> AsyncIterator[list[Any]]:
        if kwargs is not None and not isinstance(kwargs, dict):
            raise InvalidError(f"kwargs must be a dict, got {type(kwargs).__name__}")
        client = await Client.current()
        source = InputSource.from_iterable(rows)
        chunks = map_chunks(
            client,
            self.target(),
            source,
            kwargs or {},
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
        )
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

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
