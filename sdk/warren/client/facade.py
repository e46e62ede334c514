"""Blocking methods generated over the async core.

Every I/O method of Warren is written once, as ``async def``. This module wraps it:

* :class:`Method` has a blocking ``__call__`` that runs the coroutine on the process's
  loop thread, and ``.aio`` that returns the coroutine for the caller's own loop.
* :class:`IteratorMethod` does the same for async generators that yield *chunks*
  (lists) of items: the blocking form crosses the thread boundary once per chunk,
  not once per item, and flattens; ``.aio`` flattens on the caller's loop.
* :class:`MapMethod`, :class:`StarmapMethod` and :class:`ForEachMethod` are iterator
  methods typed against the function they map: a ``ParamSpec`` cannot say "one
  iterable per positional parameter", so their overloads do, for up to four.

The loop thread is a daemon thread started on first use and replaced in a child
after ``fork``; its loop is uvloop's where it is installed (:mod:`warren.client.event_loop`).
Ctrl-C during a blocking call cancels the task running it. A blocking call made from
inside a running event loop raises :class:`~warren.exceptions.BlockingCallInLoopError`
naming the ``.aio`` form.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
import warnings
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
)
from typing import Any, Concatenate, Generic, ParamSpec, TypedDict, TypeVar, Unpack, overload

from warren.client.event_loop import new_event_loop
from warren.exceptions import BlockingCallInLoopError

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
T = TypeVar("T")
# The mapped function's type; covariant, so that `def f(x: int) -> int` is a
# `Callable[Concatenate[A, Q], R]` with A = int, R = int.
F = TypeVar("F", bound=Callable[..., Any], covariant=True)
Q = ParamSpec("Q")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")

_CANCEL_GRACE = 10.0


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._thread = threading.Thread(target=self._run, name="warren-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` on this loop when the process exits (e.g. to close a client)."""
        self._closers.append(closer)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def shutdown(self, timeout: float = 5.0) -> None:
        if self.loop.is_closed():
            return

        async def close_all() -> None:
            for closer in reversed(self._closers):
                with contextlib.suppress(Exception):  # best effort at interpreter exit
                    await closer()

        with contextlib.suppress(Exception):
            self.submit(close_all()).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


_lock = threading.Lock()
_loop_thread: LoopThread | None = None


def loop_thread() -> LoopThread:
    """The process's loop thread, started on first use."""
    global _loop_thread
    thread = _loop_thread
    if thread is not None:
        return thread
    with _lock:
        if _loop_thread is None:
            _loop_thread = LoopThread()
        return _loop_thread


def _reset_after_fork() -> None:
    # The thread does not exist in the child; its loop and connections belong to the parent.
    global _loop_thread, _lock
    _loop_thread = None
    _lock = threading.Lock()


def _shutdown_at_exit() -> None:
    if _loop_thread is not None:
        _loop_thread.shutdown()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_shutdown_at_exit)


def in_loop_thread() -> bool:
    return _loop_thread is not None and threading.current_thread() is _loop_thread._thread


def in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def check_not_in_running_loop(name: str) -> None:
    """Raise if a blocking call named ``name`` is attempted inside a running event loop."""
    if not in_running_loop():
        return
    raise BlockingCallInLoopError(
        f"{name}() blocks, and it was called inside a running event loop; "
        f"use `await {name}.aio(...)` there instead"
    )


class _BlockingCall(Generic[T]):
    """One blocking call: its coroutine runs as a task on the loop thread, and the
    calling thread sleeps on a lock that the task releases when it is done.

    A plain lock is the cheapest way for one thread to wait for another
    (``concurrent.futures`` and chained futures cost several times as much), and its
    ``acquire`` is interruptible by Ctrl-C.
    """

    __slots__ = ("_done", "_error", "_make", "_result", "_started", "_task")

    def __init__(self, make_coro: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self._make = make_coro
        self._done = threading.Lock()
        self._done.acquire()
        self._started = False
        self._task: asyncio.Task[None] | None = None
        self._result: T | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """On the loop thread: create the task."""
        self._started = True
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            self._result = await self._make()
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.release()

    def cancel(self) -> None:
        """On the loop thread: cancel the task, or keep it from starting."""
        if self._task is not None:
            self._task.cancel()
        elif not self._started:
            self._started = True
            self._error = asyncio.CancelledError()
            self._done.release()

    def wait(self, timeout: float = -1) -> bool:
        return self._done.acquire(timeout=timeout)

    def outcome(self) -> T:
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


def run_blocking(make_coro: Callable[[], Coroutine[Any, Any, T]], name: str) -> T:
    """Run the coroutine made by ``make_coro`` on the loop thread and wait for its result.

    On Ctrl-C the task is cancelled and, within a grace period, allowed to finish its
    clean-up (a cancelled call tells its container, a map cancels its inputs) before
    ``KeyboardInterrupt`` propagates.
    """
    if asyncio._get_running_loop() is not None:
        check_not_in_running_loop(name)
    thread = loop_thread()
    call = _BlockingCall(make_coro)
    thread.loop.call_soon_threadsafe(call.start)
    try:
        call.wait()
    except KeyboardInterrupt:
        thread.loop.call_soon_threadsafe(call.cancel)
        call.wait(_CANCEL_GRACE)
        raise
    return call.outcome()


class Method(Generic[P, R_co]):
    """A blocking callable with an ``.aio`` twin, made from one coroutine function."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R_co]], name: str) -> None:
        self._fn = fn
        self._name = name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        return run_blocking(lambda: self._fn(*args, **kwargs), self._name)

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]:
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<warren method {self._name}>"


async def _flatten(chunks: AsyncIterator[list[T]]) -> AsyncIterator[T]:
    try:
        async for chunk in chunks:
            for item in chunk:
                yield item
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def _next_chunk(chunks: AsyncIterator[list[T]]) -> list[T]:
    return await chunks.__anext__()


def _iterate_blocking(make_chunks: Callable[[], AsyncIterator[list[T]]], name: str) -> Iterator[T]:
    chunks = make_chunks()
    thread = loop_thread()
    try:
        while True:
            try:
                chunk = run_blocking(lambda: _next_chunk(chunks), name)
            except StopAsyncIteration:
                return
            yield from chunk
    finally:
        # Reached on exhaustion, on `break` (the generator is closed) and on errors: the
        # async side's own `finally` cancels whatever is left of the work.
        closing = thread.submit(chunks.aclose())  # type: ignore[attr-defined]
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            closing.result(_CANCEL_GRACE)


class IteratorMethod(Generic[P, T]):
    """Like :class:`Method`, for an async generator function that yields lists of items.

    With ``warn_unused``, an iterator dropped before it was iterated warns that nothing
    ran (for APIs such as ``for_each`` that do their work only when iterated).
    """

    __slots__ = ("_fn", "_name", "_warn_unused")

    def __init__(
        self, fn: Callable[P, AsyncIterator[list[T]]], name: str, *, warn_unused: bool = False
    ) -> None:
        self._fn = fn
        self._name = name
        self._warn_unused = warn_unused

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        check_not_in_running_loop(self._name)
        iterator = _iterate_blocking(lambda: self._fn(*args, **kwargs), self._name)
        return _Watched(iterator, self._name) if self._warn_unused else iterator

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        iterator = _flatten(self._fn(*args, **kwargs))
        return _AsyncWatched(iterator, self._name) if self._warn_unused else iterator

    def __repr__(self) -> str:
        return f"<warren iterator method {self._name}>"


def _warn_never_iterated(name: str) -> None:
    warnings.warn(
        f"the iterator returned by {name}() was dropped without being iterated, so no "
        "input ran; iterate it (for example `for _ in ...: pass`) to run the calls",
        RuntimeWarning,
        stacklevel=3,
    )


class _Watched(Iterator[T]):
    def __init__(self, iterator: Iterator[T], name: str) -> None:
        self._iterator = iterator
        self._name = name
        self._started = False

    def __next__(self) -> T:
        self._started = True
        return next(self._iterator)

    def __del__(self) -> None:
        if not self._started:
            _warn_never_iterated(self._name)


class _AsyncWatched(AsyncIterator[T]):
    def __init__(self, iterator: AsyncIterator[T], name: str) -> None:
        self._iterator = iterator
        self._name = name
        self._started = False

    async def __anext__(self) -> T:
        self._started = True
        return await anext(self._iterator)

    async def aclose(self) -> None:
        self._started = True
        await self._iterator.aclose()  # type: ignore[attr-defined]

    def __del__(self) -> None:
        if not self._started:
            _warn_never_iterated(self._name)


class MapOptions(TypedDict, total=False):
    """The keyword options of ``map``, ``starmap`` and ``for_each``."""

    kwargs: dict[str, Any] | None
    order_outputs: bool
    return_exceptions: bool


# The overloads below take the mapped function as `Concatenate[A, ..., Q]`, not `[A, ...]`:
# the parameters past the iterables may be given by `kwargs=` or have defaults, so only
# the iterables' element types and their count (not more than the function takes) are
# checked.


class _TypedIteratorMethod(Generic[F]):
    """An :class:`IteratorMethod` seen through signatures derived from the function ``F``."""

    __slots__ = ("_method",)

    def __init__(self, method: IteratorMethod[..., Any]) -> None:
        self._method = method

    def __repr__(self) -> str:
        return repr(self._method)


class MapMethod(_TypedIteratorMethod[F]):
    """``f.map``: one iterable per positional parameter of ``f``; yields its results."""

    __slots__ = ()

    @overload
    def __call__(
        self: MapMethod[Callable[Concatenate[A, Q], R]],
        a: Iterable[A],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def __call__(
        self: MapMethod[Callable[Concatenate[A, B, Q], R]],
        a: Iterable[A],
        b: Iterable[B],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def __call__(
        self: MapMethod[Callable[Concatenate[A, B, C, Q], R]],
        a: Iterable[A],
        b: Iterable[B],
        c: Iterable[C],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def __call__(
        self: MapMethod[Callable[Concatenate[A, B, C, D, Q], R]],
        a: Iterable[A],
        b: Iterable[B],
        c: Iterable[C],
        d: Iterable[D],
        /,
        *more: Iterable[Any],
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    def __call__(self, *iterables: Iterable[Any], **options: Unpack[MapOptions]) -> Iterator[Any]:
        return self._method(*iterables, **options)

    @overload
    def aio(
        self: MapMethod[Callable[Concatenate[A, Q], R]],
        a: Iterable[A] | AsyncIterable[A],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def aio(
        self: MapMethod[Callable[Concatenate[A, B, Q], R]],
        a: Iterable[A] | AsyncIterable[A],
        b: Iterable[B] | AsyncIterable[B],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def aio(
        self: MapMethod[Callable[Concatenate[A, B, C, Q], R]],
        a: Iterable[A] | AsyncIterable[A],
        b: Iterable[B] | AsyncIterable[B],
        c: Iterable[C] | AsyncIterable[C],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def aio(
        self: MapMethod[Callable[Concatenate[A, B, C, D, Q], R]],
        a: Iterable[A] | AsyncIterable[A],
        b: Iterable[B] | AsyncIterable[B],
        c: Iterable[C] | AsyncIterable[C],
        d: Iterable[D] | AsyncIterable[D],
        /,
        *more: Iterable[Any] | AsyncIterable[Any],
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    def aio(
        self, *iterables: Iterable[Any] | AsyncIterable[Any], **options: Unpack[MapOptions]
    ) -> AsyncIterator[Any]:
        return self._method.aio(*iterables, **options)


class StarmapMethod(_TypedIteratorMethod[F]):
    """``f.starmap``: an iterable of argument tuples for ``f``; yields its results."""

    __slots__ = ()

    @overload
    def __call__(
        self: StarmapMethod[Callable[Concatenate[A, Q], R]],
        rows: Iterable[tuple[A]],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def __call__(
        self: StarmapMethod[Callable[Concatenate[A, B, Q], R]],
        rows: Iterable[tuple[A, B]],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def __call__(
        self: StarmapMethod[Callable[Concatenate[A, B, C, Q], R]],
        rows: Iterable[tuple[A, B, C]],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    @overload
    def __call__(
        self: StarmapMethod[Callable[Concatenate[A, B, C, D, Q], R]],
        rows: Iterable[tuple[A, B, C, D, *tuple[Any, ...]]],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]: ...

    def __call__(self, rows: Iterable[Any], /, **options: Unpack[MapOptions]) -> Iterator[Any]:
        return self._method(rows, **options)

    @overload
    def aio(
        self: StarmapMethod[Callable[Concatenate[A, Q], R]],
        rows: Iterable[tuple[A]] | AsyncIterable[tuple[A]],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def aio(
        self: StarmapMethod[Callable[Concatenate[A, B, Q], R]],
        rows: Iterable[tuple[A, B]] | AsyncIterable[tuple[A, B]],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def aio(
        self: StarmapMethod[Callable[Concatenate[A, B, C, Q], R]],
        rows: Iterable[tuple[A, B, C]] | AsyncIterable[tuple[A, B, C]],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    @overload
    def aio(
        self: StarmapMethod[Callable[Concatenate[A, B, C, D, Q], R]],
        rows: Iterable[tuple[A, B, C, D, *tuple[Any, ...]]]
        | AsyncIterable[tuple[A, B, C, D, *tuple[Any, ...]]],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]: ...

    def aio(
        self, rows: Iterable[Any] | AsyncIterable[Any], /, **options: Unpack[MapOptions]
    ) -> AsyncIterator[Any]:
        return self._method.aio(rows, **options)


class ForEachMethod(_TypedIteratorMethod[F]):
    """``f.for_each``: each item is ``f``'s single argument; yields its results."""

    __slots__ = ()

    def __call__(
        self: ForEachMethod[Callable[Concatenate[A, Q], R]],
        items: Iterable[A],
        /,
        **options: Unpack[MapOptions],
    ) -> Iterator[R]:
        return self._method(items, **options)

    def aio(
        self: ForEachMethod[Callable[Concatenate[A, Q], R]],
        items: Iterable[A] | AsyncIterable[A],
        /,
        **options: Unpack[MapOptions],
    ) -> AsyncIterator[R]:
        return self._method.aio(items, **options)
