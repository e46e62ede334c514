"""map, starmap and for_each against real containers (Step 2)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import warren
from support import lines, max_overlap, queue_depth, wait_until
from warren.wire import naming

app = warren.App("test-map")


def record(path: str, line: str) -> None:
    """Append one line (O_APPEND: whole lines, from any container process)."""
    with open(path, "a") as handle:
        handle.write(line + "\n")


@app.function(max_containers=2)
def add(x: int, y: int, *, scale: int = 1) -> int:
    return (x + y) * scale


@app.function(max_containers=2, max_inputs=4)
async def jittery_square(x: int) -> int:
    await asyncio.sleep(random.random() * 0.05)
    return x * x


@app.function()
def fails_on_multiples_of_three(x: int) -> int:
    if x % 3 == 0:
        raise KeyError(x)
    return x


@app.function()
def fails_on_five(x: int, log: str) -> int:
    record(log, str(x))
    if x == 5:
        raise ValueError("five")
    time.sleep(0.2)
    return x


@app.function(max_inputs=8)
async def identity(x: int) -> int:
    return x


@app.function(max_containers=4)
def half_second(x: int) -> int:
    time.sleep(0.5)
    return x


@app.function(max_containers=2)
def timed(x: int, log: str) -> int:
    started = time.time()
    time.sleep(0.1)
    record(log, f"{started} {time.time()}")
    return x


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    with app.run():
        yield app


def test_zipped_iterables_stop_at_the_shortest_and_kwargs_reach_every_call() -> None:
    assert list(add.map(range(10), [100, 200, 300], kwargs={"scale": 2})) == [200, 402, 604]


def test_ordered_output_equals_the_list_comprehension_when_calls_finish_out_of_order() -> None:
    xs = list(range(60))
    assert list(jittery_square.map(xs)) == [x * x for x in xs]


def test_unordered_output_is_a_permutation_of_the_results() -> None:
    xs = list(range(60))
    out = list(jittery_square.map(xs, order_outputs=False))
    assert sorted(out) == [x * x for x in xs]


def test_return_exceptions_yields_the_exceptions_in_place_with_their_types() -> None:
    out = list(fails_on_multiples_of_three.map(range(7), return_exceptions=True))
    assert [type(o) for o in out] == [KeyError, int, int, KeyError, int, int, KeyError]
    assert out[3].args == (3,)
    assert out[1:3] == [1, 2]


def test_the_first_failure_raises_and_cancels_the_rest_of_the_map(tmp_path: Path) -> None:
    # Given 200 inputs on one container, of which input 5 fails at once and the others take 0.2 s
    log = tmp_path / "executions"
    # When the map runs, Then it raises input 5's error
    with pytest.raises(ValueError, match="five"):
        list(fails_on_five.map(range(200), kwargs={"log": str(log)}))
    # And the inputs left are cancelled: the execution count stops growing, well below 200
    time.sleep(1.0)
    first = len(lines(log))
    time.sleep(2.0)
    assert len(lines(log)) == first
    assert first < 30


def test_breaking_out_of_a_map_over_an_infinite_generator_cancels_the_rest() -> None:
    started = time.monotonic()
    results = []
    for result in identity.map(itertools.count()):
        results.append(result)
        if len(results) == 100:
            break
    assert results == list(range(100))
    assert time.monotonic() - started < 30
    queue = naming.function_queue(app.environment, app.instance_name, "identity")
    assert wait_until(lambda: queue_depth(queue) == 0, 15)


def test_slow_inputs_spread_over_all_containers_instead_of_batching_onto_one() -> None:
    started = time.monotonic()
    assert list(half_second.map(range(20))) == list(range(20))
    # 20 x 0.5 s on 4 containers is 2.5 s; batched onto one container it would be 10 s.
    assert time.monotonic() - started < 8


def test_two_single_input_containers_never_run_more_than_two_inputs_at_once(tmp_path: Path) -> None:
    log = tmp_path / "intervals"
    assert list(timed.map(range(40), kwargs={"log": str(log)})) == list(range(40))
    intervals = [tuple(map(float, line.split())) for line in lines(log)]
    assert len(intervals) == 40
    assert max_overlap(intervals) <= 2  # type: ignore[arg-type]


def test_starmap_unpacks_tuples() -> None:
    assert list(add.starmap([(1, 2), (3, 4)], kwargs={"scale": 10})) == [30, 70]


def test_for_each_calls_once_per_item_in_completion_or_input_order() -> None:
    assert sorted(jittery_square.for_each(range(20))) == [x * x for x in range(20)]
    assert list(jittery_square.for_each(range(20), order_outputs=True)) == [
        x * x for x in range(20)
    ]


def test_a_for_each_iterator_dropped_unused_warns_that_nothing_ran() -> None:
    with pytest.warns(RuntimeWarning, match="no input ran"):
        identity.for_each(range(3))


async def _numbers(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await asyncio.sleep(0)
        yield i


async def test_the_aio_forms_accept_async_generators() -> None:
    assert [r async for r in add.map.aio(_numbers(5), range(5))] == [0, 2, 4, 6, 8]
    assert [r async for r in add.starmap.aio([(1, 1)], kwargs={"scale": 3})] == [6]
    out = [r async for r in jittery_square.for_each.aio(_numbers(10))]
    assert sorted(out) == [x * x for x in range(10)]


def test_a_blocking_generator_does_not_stall_result_handling() -> None:
    # Given a generator that yields one input, then blocks its thread for 4 s
    def blocking_numbers() -> Iterator[int]:
        yield 0
        time.sleep(4)
        yield 1

    # When mapped, Then the first result arrives while the generator is still blocked:
    # it is read off the event loop that receives results.
    started = time.monotonic()
    results = iter(identity.map(blocking_numbers()))
    assert next(results) == 0
    assert time.monotonic() - started < 3
    assert list(results) == [1]


def test_a_map_of_a_function_whose_app_is_not_running_raises_not_found() -> None:
    other = warren.App("test-map-not-running")

    @other.function()
    def nothing(x: int) -> int:
        return x

    with pytest.raises(warren.NotFoundError):
        list(nothing.map(range(3)))


def test_an_error_inside_the_callers_generator_is_raised_by_the_map() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise RuntimeError("generator broke")

    with pytest.raises(RuntimeError, match="generator broke"):
        list(identity.map(broken()))
