"""remote, local and .aio against a real engine and RabbitMQ (Step 1, points 1-4)."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import warren

app = warren.App("test-remote")
local_calls: list[int] = []


@dataclass
class Point:
    x: int
    y: float
    label: str


class Box:
    """A plain custom class (no dataclass, no numpy)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and other.value == self.value


@app.function()
def echo(value: Any) -> Any:
    return value


@app.function(max_inputs=4)
async def aecho(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


@app.function()
def fails(x: int) -> int:
    raise ValueError("bad x")


@app.function()
async def afails(x: int) -> int:
    raise KeyError(x)


@app.function(timeout=1)
async def sleeps_past_its_timeout(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@app.function(timeout=1)
def sync_sleeps_past_its_timeout(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@app.function()
def record_locally(x: int) -> int:
    local_calls.append(x)
    return x + 1


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    with app.run():
        yield app


VALUES = [
    7,
    -(2**63),
    2**80,
    "héllo",
    {"a": [1, 2, {"b": None, "c": [True, 1.5]}], "d": {}},
    [[1, 2], ["x"], []],
    b"\x00\xffbytes",
    (1, "tuple"),
    Point(1, 2.5, "p"),
    Box({"nested": [Box(1)]}),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_remote_of_a_sync_function_returns_values_unchanged(value: Any) -> None:
    result = echo.remote(value)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_remote_of_an_async_function_returns_values_unchanged(value: Any) -> None:
    result = aecho.remote(value)
    assert result == value
    assert type(result) is type(value)


def test_a_remote_value_error_is_raised_as_value_error_with_the_remote_traceback() -> None:
    with pytest.raises(ValueError, match="bad x") as caught:
        fails.remote(1)
    text = "".join(traceback.format_exception(caught.value))
    assert 'raise ValueError("bad x")' in text  # the function's own line
    assert "test_remote.py" in text
    assert "in fails" in text


def test_an_async_functions_exception_keeps_its_type() -> None:
    with pytest.raises(KeyError) as caught:
        afails.remote(5)
    assert caught.value.args == (5,)
    assert any("raise KeyError(x)" in note for note in caught.value.__notes__)


def test_local_runs_in_this_process() -> None:
    local_calls.clear()
    assert record_locally.local(41) == 42
    assert local_calls == [41]
    # ...whereas remote runs elsewhere: this process's list does not change.
    assert record_locally.remote(1) == 2
    assert local_calls == [41]


async def test_remote_aio_inside_an_asyncio_test() -> None:
    results = await asyncio.gather(*(aecho.remote.aio(i) for i in range(20)))
    assert results == list(range(20))
    assert await echo.remote.aio(Point(3, 4.0, "q")) == Point(3, 4.0, "q")


async def test_a_blocking_call_inside_a_running_loop_names_the_aio_form() -> None:
    with pytest.raises(warren.BlockingCallInLoopError, match=r"await echo\.remote\.aio\(\.\.\.\)"):
        echo.remote(1)


def test_an_unserialisable_argument_raises_a_clear_error_before_publishing() -> None:
    import threading

    with pytest.raises(warren.SerializationError, match="lock"):
        echo.remote(threading.Lock())


def test_an_async_function_past_its_timeout_raises_function_timeout_error_promptly() -> None:
    import time

    started = time.monotonic()
    with pytest.raises(warren.FunctionTimeoutError, match="timeout of 1s"):
        sleeps_past_its_timeout.remote(30)
    assert time.monotonic() - started < 10
    assert sleeps_past_its_timeout.remote(0.01) == 0.01  # the slot is free again


def test_a_sync_function_past_its_timeout_raises_and_its_container_is_replaced() -> None:
    import time

    started = time.monotonic()
    with pytest.raises(warren.FunctionTimeoutError, match="timeout of 1s"):
        sync_sleeps_past_its_timeout.remote(30)
    assert time.monotonic() - started < 10
    started = time.monotonic()
    assert sync_sleeps_past_its_timeout.remote(0.01) == 0.01  # a fresh container answers
    assert time.monotonic() - started < 10
