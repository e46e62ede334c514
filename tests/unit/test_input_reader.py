"""Reading a map's inputs: lazily, boundedly, off the event loop, errors passed on."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from warren.client.input_reader import READ_AHEAD, InputSource, zip_inputs


async def _until(condition: Callable[[], bool], timeout: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.001)


async def _take_all(source: InputSource, limit: int = 1000) -> list[Any]:
    items: list[Any] = []
    while taken := await source.take(limit):
        assert 1 <= len(taken) <= limit
        items += taken
    return items


async def _arange(count: int) -> AsyncIterator[int]:
    for i in range(count):
        yield i


async def test_every_item_of_a_sync_iterable_is_handed_out_in_order_then_nothing() -> None:
    source = InputSource.from_iterable(iter(range(10)))
    assert await _take_all(source, limit=3) == list(range(10))
    assert await source.take(3) == []  # exhausted stays exhausted
    await source.close()


async def test_every_item_of_an_async_iterable_is_handed_out_in_order_then_nothing() -> None:
    source = InputSource.from_iterable(_arange(10))
    assert await _take_all(source, limit=3) == list(range(10))
    assert await source.take(3) == []
    await source.close()


async def test_an_empty_iterable_gives_nothing() -> None:
    source = InputSource.from_iterable([])
    assert await source.take(10) == []
    await source.close()


async def test_a_take_returns_what_is_read_when_fewer_than_its_limit_are_there() -> None:
    gate = threading.Event()

    def items() -> Iterator[int]:
        yield 0
        gate.wait(5)  # the next item is slow to come
        yield 1

    source = InputSource.from_iterable(items())
    assert await source.take(100) == [0]
    gate.set()
    assert await _take_all(source) == [1]
    await source.close()


async def test_a_sync_iterable_is_read_on_another_thread_than_the_event_loop() -> None:
    readers: set[int] = set()

    def items() -> Iterator[int]:
        for i in range(3):
            readers.add(threading.get_ident())
            yield i

    source = InputSource.from_iterable(items())
    assert await _take_all(source) == [0, 1, 2]
    assert readers and threading.get_ident() not in readers
    await source.close()


async def test_the_error_a_sync_iterable_raises_reaches_the_map_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad input")

    source = InputSource.from_iterable(items())
    taken: list[int] = []
    with pytest.raises(ValueError, match="bad input"):
        while chunk := await source.take(10):
            taken += chunk
    assert taken == [1, 2]
    await source.close()


async def test_the_error_an_async_iterable_raises_reaches_the_map_after_the_items_before_it() -> (
    None
):
    async def items() -> AsyncIterator[int]:
        yield 1
        raise KeyError("gone")

    source = InputSource.from_iterable(items())
    assert await source.take(10) == [1]
    with pytest.raises(KeyError, match="gone"):
        await source.take(10)
    with pytest.raises(KeyError):  # and again: the map never sees a clean end
        await source.take(10)
    await source.close()


async def test_a_non_iterable_is_refused_when_the_source_is_made() -> None:
    with pytest.raises(TypeError):
        InputSource.from_iterable(42)  # type: ignore[arg-type]


async def test_an_infinite_sync_generator_is_read_no_further_than_the_read_ahead() -> None:
    # Given an endless generator that counts what is read of it
    counter = itertools.count()
    read = 0

    def endless() -> Iterator[int]:
        nonlocal read
        while True:
            read += 1
            yield next(counter)

    source = InputSource.from_iterable(endless())
    # Then it is read up to the read-ahead, and stops there
    await _until(lambda: read >= READ_AHEAD)
    await asyncio.sleep(0.005)
    assert read == READ_AHEAD
    # When the map takes ten, ten more are read (and no more)
    assert await source.take(10) == list(range(10))
    await _until(lambda: read >= READ_AHEAD + 10)
    await asyncio.sleep(0.005)
    assert read == READ_AHEAD + 10
    await source.close()


async def test_an_infinite_async_generator_is_read_no_further_than_the_read_ahead() -> None:
    read = 0

    async def endless() -> AsyncIterator[int]:
        nonlocal read
        for i in itertools.count():
            read += 1
            yield i

    source = InputSource.from_iterable(endless())
    await _until(lambda: read >= READ_AHEAD)
    await asyncio.sleep(0.005)
    # the read-ahead, and at most the one item the reader holds while it waits for room
    assert READ_AHEAD <= read <= READ_AHEAD + 1
    before = read
    assert await source.take(5) == list(range(5))
    await _until(lambda: read >= before + 5)
    await asyncio.sleep(0.005)
    assert read == before + 5
    await source.close()


async def test_closing_stops_the_reader_thread_of_a_sync_iterable() -> None:
    # Given a source whose thread waits for room to read an endless generator
    read = 0

    def endless() -> Iterator[int]:
        nonlocal read
        while True:
            read += 1
            yield read

    source = InputSource.from_iterable(endless())
    await _until(lambda: read >= READ_AHEAD)
    readers = [t for t in threading.enumerate() if t.name == "warren-map-inputs"]
    assert readers
    # When the map closes it
    await source.close()
    # Then the thread ends without reading more
    for thread in readers:
        await asyncio.to_thread(thread.join, 1.0)
        assert not thread.is_alive()
    assert read == READ_AHEAD


async def test_closing_stops_reading_an_async_iterable() -> None:
    read = 0

    async def endless() -> AsyncIterator[int]:
        nonlocal read
        for i in itertools.count():
            read += 1
            yield i

    source = InputSource.from_iterable(endless())
    await _until(lambda: read >= READ_AHEAD)
    await source.close()
    before = read
    assert await source.take(READ_AHEAD) != []  # what was read ahead is still there
    await asyncio.sleep(0.005)
    assert read == before


def test_zipping_sync_iterables_gives_rows_until_the_shortest_ends() -> None:
    rows = zip_inputs(([1, 2, 3], "ab"))
    assert not isinstance(rows, AsyncIterator)
    assert list(rows) == [(1, "a"), (2, "b")]


async def test_zipping_a_sync_with_an_async_iterable_gives_rows_until_the_shortest_ends() -> None:
    readers: set[int] = set()

    def letters() -> Iterator[str]:
        for letter in "abcdef":
            readers.add(threading.get_ident())
            yield letter

    rows = zip_inputs((_arange(3), letters()))
    assert isinstance(rows, AsyncIterator)
    assert [row async for row in rows] == [(0, "a"), (1, "b"), (2, "c")]
    # the sync side is read off the loop
    assert readers and threading.get_ident() not in readers


async def test_zipped_async_iterables_end_when_the_first_one_ends() -> None:
    rows = zip_inputs((_arange(5), _arange(2)))
    assert isinstance(rows, AsyncIterator)
    assert [row async for row in rows] == [(0, 0), (1, 1)]


async def test_a_source_of_zipped_mixed_iterables_hands_out_their_rows() -> None:
    source = InputSource.from_iterable(zip_inputs((range(4), _arange(10))))
    assert await _take_all(source) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    await source.close()
