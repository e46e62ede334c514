"""The engine of ``map``, ``starmap`` and ``for_each``: streaming, bounded, batched.

One map is one *invocation*. A sender task takes items from the
:class:`~warren.client.input_reader.InputSource`, numbers them, and publishes them in batches (sized
by the function's run time, :mod:`warren.client.batch_sizer`) while the map holds fewer than
``WINDOW`` inputs; results come back to a sink keyed by the invocation id and wait in
an :class:`~warren.client.reorder_buffer.OutputBuffer`, which releases them in input
order or as they
arrive. Memory is bounded by the window, not by the number of inputs. The inputs
travel as transient messages: the sender keeps those whose results have not come
back, and sends them again if the broker restarted. However the map ends early (an
error, ``break``, Ctrl-C, cancellation) its remaining inputs are cancelled:
containers learn it from a broadcast and skip them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Generic, ParamSpec, TypeVar

from warren.client import progress
from warren.client.batch_sizer import PROBE_WAIT, BatchSizer
from warren.client.call_stream import containers_of
from warren.client.connection import Client
from warren.client.facade import ForEachMethod, IteratorMethod, MapMethod, StarmapMethod
from warren.client.input_reader import AnyIterable, InputSource, zip_inputs
from warren.client.invocation import (
    Target,
    encode_input,
    not_running,
    publish_cancel,
    result_value,
)
from warren.client.reorder_buffer import OutputBuffer
from warren.exceptions import InvalidError, NotFoundError
from warren.wire import failure
from warren.wire.batching import ITEM_OVERHEAD, slices_within
from warren.wire.protocol import STATUS_OK, CallBatch
from warren.wire.signing import ENVELOPE_OVERHEAD

P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)

# Inputs one map may hold (sent and not yet yielded): enough for several full batches
# in flight to every container. And the bytes of encoded inputs it keeps to send again
# after a broker restart: past that, it sends nothing more until results come back.
WINDOW = 10_000
MAX_UNANSWERED_BYTES = 64 * 1024 * 1024
RELEASE_CHUNK = 2048

Raw = tuple[int, int, bytes]


class _MapSink:
    """Receives the map's results on the client's consumer, wakes the map.

    It also keeps the map's counts (:class:`~warren.client.progress.MapCounters`) for
    its progress line.
    """

    def __init__(
        self,
        buffer: OutputBuffer[Raw],
        sizer: BatchSizer,
        fail_fast: bool,
        total: int | None = None,
    ) -> None:
        self.buffer = buffer
        self.sizer = sizer
        self.fail_fast = fail_fast
        self.error: BaseException | None = None
        self.first_failure: Raw | None = None
        self.changed = asyncio.Event()
        self.sender: _Sender | None = None
        self.failed = 0
        self._total = total

    @property
    def sent(self) -> int:
        return self.buffer.sent

    @property
    def done(self) -> int:
        return self.buffer.sent - self.buffer.outstanding

    @property
    def total(self) -> int | None:
        if self.sender is not None and self.sender.done:
            return self.buffer.sent
        return self._total

    def deliver(self, index: int, status: int, fmt: int, data: bytes, duration: float) -> bool:
        if not self.buffer.add(index, (status, fmt, data)):
            return False
        self.sizer.observe(duration)
        if self.sender is not None:
            self.sender.answered(index)
        if status != STATUS_OK:
            self.failed += 1
            if self.fail_fast and self.first_failure is None:
                self.first_failure = (status, fmt, data)
        self.changed.set()
        return True

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.changed.set()

    def resend(self) -> None:
        if self.sender is not None:
            self.sender.resend()


class _Sender:
    """Publishes the map's inputs in batches, within the window.

    It keeps every input it sent until its result comes back: calls travel as
    transient messages, and a broker restart (:mod:`warren.client.restart_watch`) has them all sent
    again.
    """

    def __init__(
        self,
        client: Client,
        target: Target,
        invocation_id: str,
        source: InputSource,
        kwargs: dict[str, Any],
        sink: _MapSink,
    ) -> None:
        self.client = client
        self.target = target
        self.invocation_id = invocation_id
        self.source = source
        self.kwargs = kwargs
        self.sink = sink
        self.room = asyncio.Event()
        self.done = False
        self._unanswered: dict[int, tuple[int, bytes]] = {}
        self._unanswered_bytes = 0
        self._again: list[int] = []
        self._learned = False
        self._probing_since: float | None = None

    def message_size(self, ready: int) -> int:
        spec = self.target.spec
        return self.sink.sizer.size(ready, spec.max_inputs, containers_of(self.target))

    def answered(self, index: int) -> None:
        encoded = self._unanswered.pop(index, None)
        if encoded is not None:
            self._unanswered_bytes -= len(encoded[1])
        if not self._learned:
            self._learned = True
            self.room.set()  # the first result: the run time is known, send the rest

    def resend(self) -> None:
        self._again = sorted(self._unanswered)
        self.room.set()

    def _full(self) -> bool:
        return self.sink.buffer.holding >= WINDOW or self._unanswered_bytes >= MAX_UNANSWERED_BYTES

    async def run(self) -> None:
        """Send the inputs; then stay, to send again what a broker restart lost."""
        buffer = self.sink.buffer
        while True:
            if self._again:
                await self._send_again()
                continue
            if self.done or self._full():
                self.room.clear()
                await self.room.wait()
                continue
            limit = self._sendable(min(WINDOW - buffer.holding, RELEASE_CHUNK))
            if not limit:
                await self._await_first_result()
                continue
            items = await self.source.take(limit)
            if not items:
                self.done = True
                self.sink.changed.set()
                continue
            max_size = self.client.signer.max_size
            encoded = [
                (buffer.sent_index(), *encode_input(args, self.kwargs, self.target, max_size))
                for args in items
            ]
            for index, fmt, data in encoded:
                self._unanswered[index] = (fmt, data)
                self._unanswered_bytes += len(data)
            await self._publish_all(encoded)

    def _sendable(self, limit: int) -> int:
        """All of ``limit`` once the run time is known; until then a probe (see batch_sizer)."""
        spec, sizer = self.target.spec, self.sink.sizer
        in_flight = self.sink.buffer.outstanding
        return sizer.sendable(limit, spec.max_inputs, containers_of(self.target), in_flight)

    async def _await_first_result(self) -> None:
        """Wait for a result to tell the run time, or learn that it is long."""
        if self.sink.sizer.known:
            return
        loop = asyncio.get_running_loop()
        started = self._probing_since = self._probing_since or loop.time()
        self.room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.room.wait(), max(0.0, started + PROBE_WAIT - loop.time()))
        if not self.sink.sizer.known and loop.time() >= started + PROBE_WAIT:
            self.sink.sizer.at_least(PROBE_WAIT)

    async def _send_again(self) -> None:
        again, self._again = self._again, []
        items = [(i, *self._unanswered[i]) for i in again if i in self._unanswered]
        if items:
            await self._publish_all(items)

    async def _publish_all(self, items: list[tuple[int, int, bytes]]) -> None:
        max_size = self.client.signer.max_size
        sizes = [len(data) + ITEM_OVERHEAD for _, _, data in items]
        count = self.message_size(len(items))
        for start, end in slices_within(sizes, count, max_size - ENVELOPE_OVERHEAD):
            await self._publish(items[start:end])

    async def _publish(self, batch: list[tuple[int, int, bytes]]) -> None:
        try:
            await self.client.publisher.publish(
                self.target.queue,
                CallBatch(self.invocation_id, batch).to_envelope(),
                correlation_id=self.invocation_id,
                persistent=False,
            )
        except NotFoundError:
            raise not_running(self.target) from None


async def map_chunks(
    client: Client,
    target: Target,
    items: InputSource,
    kwargs: dict[str, Any],
    *,
    order_outputs: bool,
    return_exceptions: bool,
    total: int | None = None,
    name: str = "map",
) -> AsyncGenerator[list[Any], None]:
    """Run a map; yield its results in chunks (lists), in order or as they complete.

    ``total`` is the number of inputs if known ahead, and ``name`` the map's name, for
    its progress line (:mod:`warren.client.progress`).
    """
    invocation_id = uuid.uuid4().hex
    buffer: OutputBuffer[Raw] = OutputBuffer(ordered=order_outputs)
    sizer = client.sizer(target.queue)
    sizer.relearn()  # this map's inputs may take longer, or shorter, than the last ones
    sink = _MapSink(buffer, sizer, fail_fast=not return_exceptions, total=total)
    sender = sink.sender = _Sender(client, target, invocation_id, items, kwargs, sink)
    client.add_sink(invocation_id, sink)
    sending = asyncio.get_running_loop().create_task(sender.run())
    sending.add_done_callback(lambda _: sink.changed.set())
    finished = False
    try:
        with progress.shown(name, sink):
            while True:
                if sink.first_failure is not None:
                    raise failure.rebuild(sink.first_failure[2], target.display_name)
                if sink.error is not None:
                    raise sink.error
                if sending.done():
                    sending.result()  # the sender failed: raise its error
                released = buffer.release(RELEASE_CHUNK)
                if released:
                    sender.room.set()
                    yield [result_value(*raw, target.display_name) for _, raw in released]
                    continue
                if sender.done and buffer.holding == 0:
                    finished = True
                    return
                sink.changed.clear()
                await sink.changed.wait()
    finally:
        client.remove_sink(invocation_id)
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        await items.close()
        if not finished and buffer.outstanding:
            await asyncio.shield(publish_cancel(client, target.environment, [invocation_id]))


class MapMethods(Generic[P, R_co]):
    """``map``, ``starmap`` and ``for_each`` of :class:`~warren.function.Function`."""

    @property
    def tag(self) -> str:
        raise NotImplementedError

    async def _client(self) -> Client:
        raise NotImplementedError

    async def _resolve(self, client: Client) -> Target:
        raise NotImplementedError

    @property
    def map(self) -> MapMethod[Callable[P, R_co]]:
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
        return MapMethod(IteratorMethod(self._map, f"{self.tag}.map"))

    @property
    def starmap(self) -> StarmapMethod[Callable[P, R_co]]:
        """Like :attr:`map`, but each item is a tuple of positional arguments.

        ``list(f.starmap([(1, 2), (3, 4)]))`` is ``[f(1, 2), f(3, 4)]``.
        """
        return StarmapMethod(IteratorMethod(self._starmap, f"{self.tag}.starmap"))

    @property
    def for_each(self) -> ForEachMethod[Callable[P, R_co]]:
        """Call the function once per item (the item is its single argument).

        Returns an iterator of results as they complete (``order_outputs=True`` for
        input order). Unlike Modal's ``for_each``, which blocks and returns ``None``,
        Warren's is driven by iteration like ``map``: nothing runs until you iterate
        it, and an iterator dropped unused warns that nothing ran. To run for side
        effects only: ``for _ in f.for_each(items): pass``.
        """
        method = IteratorMethod(self._for_each, f"{self.tag}.for_each", warn_unused=True)
        return ForEachMethod(method)

    async def _map(
        self,
        *input_iterators: AnyIterable,
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> AsyncIterator[list[Any]]:
        if not input_iterators:
            raise InvalidError(f"{self.tag}.map() needs at least one iterable of inputs")
        total = progress.sized_total(input_iterators)
        async for chunk in self._run_map(
            zip_inputs(input_iterators), kwargs, order_outputs, return_exceptions, "map", total
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
        total = progress.sized_total((input_iterator,))
        async for chunk in self._run_map(
            input_iterator, kwargs, order_outputs, return_exceptions, "starmap", total
        ):
            yield chunk

    async def _for_each(
        self,
        input_iterator: AnyIterable,
        *,
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = False,
        return_exceptions: bool = False,
    ) -> AsyncIterator[list[Any]]:
        rows = zip_inputs((input_iterator,))
        total = progress.sized_total((input_iterator,))
        async for chunk in self._run_map(
            rows, kwargs, order_outputs, return_exceptions, "for_each", total
        ):
            yield chunk

    async def _run_map(
        self,
        rows: AnyIterable,
        kwargs: dict[str, Any] | None,
        order_outputs: bool,
        return_exceptions: bool,
        method: str,
        total: int | None,
    ) -> AsyncIterator[list[Any]]:
        """``method`` and ``total`` (the number of inputs, if known) name its progress line."""
        if kwargs is not None and not isinstance(kwargs, dict):
            raise InvalidError(f"kwargs must be a dict, got {type(kwargs).__name__}")
        client = await self._client()
        target = await self._resolve(client)
        source = InputSource.from_iterable(rows)
        chunks = map_chunks(
            client,
            target,
            source,
            kwargs or {},
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
            name=f"{self.tag}.{method}",
            total=total,
        )
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk
