"""The sync facade over the async core: no broker involved."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator

import pytest
from warren.client.facade import ForEachMethod, IteratorMethod, MapMethod, Method, loop_thread
from warren.exceptions import BlockingCallInLoopError


async def add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def test_a_method_blocks_on_the_loop_thread_and_aio_returns_the_coroutine() -> None:
    method = Method(add, "add")
    assert method(1, 2) == 3
    assert asyncio.run(method.aio(2, 3)) == 5


async def test_a_blocking_call_inside_a_running_loop_raises_and_names_the_aio_form() -> None:
    with pytest.raises(BlockingCallInLoopError, match=r"await add\.aio\(\.\.\.\)"):
        Method(add, "add")(1, 2)


def test_ctrl_c_during_a_blocking_call_cancels_the_running_task() -> None:
    # Given a blocking call of a coroutine that would sleep for a minute
    cancelled = threading.Event()

    async def sleepy() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    main = threading.main_thread().ident
    assert main is not None
    timer = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
    timer.start()
    # When Ctrl-C arrives, Then KeyboardInterrupt is raised and the task was cancelled
    with pytest.raises(KeyboardInterrupt):
        Method(sleepy, "sleepy")()
    assert cancelled.wait(5)


async def chunks(n: int, closed: list[bool]) -> AsyncIterator[list[int]]:
    try:
        for start in range(0, n, 3):
            yield list(range(start, min(start + 3, n)))
    finally:
        closed.append(True)


def test_an_iterator_method_flattens_chunks_in_both_forms() -> None:
    closed: list[bool] = []
    method = IteratorMethod(chunks, "chunks")
    assert list(method(7, closed)) == list(range(7))

    async def collect() -> list[int]:
        return [x async for x in method.aio(7, closed)]

    assert asyncio.run(collect()) == list(range(7))
    assert closed == [True, True]


async def squares(
    *iterables: list[int], order_outputs: bool = True, return_exceptions: bool = False
) -> AsyncIterator[list[int]]:
    assert not order_outputs and return_exceptions
    yield [x * x for x in iterables[0]]


def test_the_typed_map_methods_pass_their_arguments_and_options_through() -> None:
    method = IteratorMethod(squares, "squares")
    typed = MapMethod(method)
    assert list(typed([1, 2], order_outputs=False, return_exceptions=True)) == [1, 4]

    async def collect() -> list[int]:
        each = ForEachMethod(method).aio([3], order_outputs=False, return_exceptions=True)
        return [x async for x in each]

    assert asyncio.run(collect()) == [9]
    assert repr(typed) == "<warren iterator method squares>"


def test_breaking_out_of_a_blocking_iterator_closes_the_async_side() -> None:
    closed: list[bool] = []
    for item in IteratorMethod(chunks, "chunks")(100, closed):
        if item == 4:
            break
    assert closed == [True]


def test_a_forked_child_gets_a_fresh_loop_thread() -> None:
    parent_loop = loop_thread().loop
    assert Method(add, "add")(1, 1) == 2
    pid = os.fork()
    if pid == 0:  # child: the parent's thread does not exist here
        ok = loop_thread().loop is not parent_loop and Method(add, "add")(2, 2) == 4
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
