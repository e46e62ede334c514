"""Calls longer than the broker lets a delivery stay unacknowledged.

RabbitMQ before 3.12 closes the channel of a consumer that holds a delivery past the
node-wide ``consumer_timeout``, and the input runs again. Warren's design: the engine
knows the broker's value (``WARREN_BROKER_CONSUMER_TIMEOUT``) and refuses, when an app
is registered, a function timeout the broker would cut off. These tests lower the
broker's timeout to 3 s (and its check interval to 1 s), and restore both after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import warren
from faults import Checker, broker_consumer_timeout, record_execution
from support import lines, wait_until

BROKER_TIMEOUT_MS = 3000


def make_app(timeout: float) -> tuple[warren.App, warren.Function[[str, float], float]]:
    app = warren.App("test-long-calls")

    @app.function(timeout=timeout)
    def sleeper(log: str, seconds: float) -> float:
        record_execution(log, "call")
        time.sleep(seconds)
        return seconds

    return app, sleeper


@pytest.fixture
def low_broker_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with broker_consumer_timeout(BROKER_TIMEOUT_MS):
        monkeypatch.setenv("WARREN_BROKER_CONSUMER_TIMEOUT", str(BROKER_TIMEOUT_MS / 1000))
        yield


@pytest.mark.usefixtures("low_broker_timeout")
def test_a_function_timeout_the_broker_would_cut_off_is_refused_with_a_clear_error() -> None:
    app, _ = make_app(timeout=10)
    with pytest.raises(warren.InvalidError) as caught, app.run():
        pass
    message = str(caught.value)
    assert "sleeper (timeout=10s)" in message
    assert "consumer_timeout is 3s" in message
    assert "WARREN_BROKER_CONSUMER_TIMEOUT" in message


@pytest.mark.usefixtures("low_broker_timeout")
def test_a_call_as_long_as_the_broker_allows_runs_once(tmp_path: Path) -> None:
    log = tmp_path / "executions"
    app, sleeper = make_app(timeout=2.7)
    with app.run():
        assert sleeper.remote(str(log), 2.5) == 2.5
        time.sleep(2)  # a broker that cut the delivery off would have redelivered it by now
    checker = Checker(log)
    checker.outcome("call")
    checker.check(["call"])
    assert checker.executions()["call"] == 1


@pytest.mark.timeout(120)
def test_the_lowered_broker_timeout_is_real_an_engine_told_otherwise_runs_inputs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an engine that believes the broker allows 30 minutes, while it allows 3 s
    log = tmp_path / "executions"
    with broker_consumer_timeout(BROKER_TIMEOUT_MS):
        monkeypatch.setenv("WARREN_BROKER_CONSUMER_TIMEOUT", "1800")
        app, sleeper = make_app(timeout=60)
        with app.run():
            # When a call runs longer than the broker's timeout
            assert sleeper.remote(str(log), 6.0) == 6.0
            # Then the broker cut the delivery off, and the input ran again: what the
            # refusal above prevents
            assert wait_until(lambda: len(lines(log)) >= 2, 10)
