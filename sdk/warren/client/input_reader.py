"""Reading a map's inputs from the caller's iterables, lazily and off the event loop.

A :class:`InputSource` holds a small, bounded read-ahead of items taken from the
caller's iterables. Sync iterables are read on a daemon thread of their own, so a slow
or blocking generator never stalls the loop that handles heartbeats and results; async
iterables are read by a task on the loop. Either way the reader waits for room before
taking the next item, so at most ``read_ahead`` items are held, and an infinite
generator is never read further than the map can send.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

READ_AHEAD = 2048

_END = object()


class InputSource:
    """Items for a map, read ahead into a bounded buffer; ``take`` hands them out."""

    def __init__(self, read_ahead: int = READ_AHEAD) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._room = threading.Semaphore(read_ahead)
        self._ready = asyncio.Event()
        self._room_freed = asyncio.Event()
        self._loop_thread = threading.get_ident()
        self._wake_pending = False
        self._finished = False
        self._error: BaseException | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_iterable(cls, items: Iterable[Any] | AsyncIterable[Any]) -> InputSource:
        source = cls()
        if isinstance(items, AsyncIterable):
            source._task = source._loop.create_task(source._pump_async(aiter(items)))
        else:
            iterator = iter(items)
            threading.Thread(
                target=source._pump_sync, args=(iterator,), name="warren-map-inputs", daemon=True
            ).start()
        return source

    async def take(self, limit: int) -> list[Any]:
        """Between 1 and ``limit`` items; ``[]`` once the iterables are exhausted."""
        while not self._items:
            if self._finished:
                if self._error is not None:
                    raise self._error
                return []
            self._ready.clear()
            await self._ready.wait()
        with self._lock:
            count = min(limit, len(self._items))
            taken = [self._items.popleft() for _ in range(count)]
        self._room.release(count)
        self._room_freed.set()
        return taken

    async def close(self) -> None:
        """Stop reading. A thread blocked inside the caller's generator exits when it returns."""
        self._closed = True
        self._room.release()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # -- readers -----------------------------------------------------------------------

    def _pump_sync(self, iterator: Iterator[Any]) -> None:
        try:
            while True:
                self._room.acquire()
                if self._closed:
                    return
                item = next(iterator, _END)
                if item is _END:
                    return
                self._push(item)
        except BaseException as exc:
            self._error = exc
        finally:
            self._finished = True
            self._wake()

    async def _pump_async(self, iterator: AsyncIterator[Any]) -> None:
        try:
            async for item in iterator:
                while not self._room.acquire(blocking=False):
                    self._room_freed.clear()
                    await self._room_freed.wait()
                if self._closed:
                    return
                self._push(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._error = exc
        finally:
            self._finished = True
            self._wake()

    def _push(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
        self._wake()

    def _wake(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._ready.set()
            return
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()


AnyIterable = Iterable[Any] | AsyncIterable[Any]


def zip_inputs(iterables: tuple[AnyIterable, ...]) -> AnyIterable:
    """Zip the map's iterables into tuples of positional arguments (shortest wins)."""
    if not any(isinstance(it, AsyncIterable) for it in iterables):
        return zip(*iterables, strict=False)
    return _azip([_as_async(it) for it in iterables])


async def _azip(iterators: list[AsyncIterator[Any]]) -> AsyncIterator[tuple[Any, ...]]:
    while True:
        row = []
        for iterator in iterators:
            try:
                row.append(await anext(iterator))
            except StopAsyncIteration:
                return
        yield tuple(row)


def _as_async(items: AnyIterable) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        return aiter(items)
    return _sync_in_thread(iter(items))


async def _sync_in_thread(iterator: Iterator[Any]) -> AsyncIterator[Any]:
    # Zipped with an async iterable: each item of the sync one is read off the loop.
    while (item := await asyncio.to_thread(next, iterator, _END)) is not _END:
        yield item
