"""The pure part of a call stream: how many containers it spreads its calls over."""

from __future__ import annotations

from warren.client.call_stream import CORES, containers_of
from warren.client.invocation import Target
from warren.wire.spec import FunctionSpec


def test_calls_spread_over_the_function_s_max_containers_when_it_sets_one() -> None:
    target = Target("dev", "app", "app-1", FunctionSpec("f", False, max_containers=7))
    assert containers_of(target) == 7


def test_calls_spread_over_one_container_per_core_when_the_function_sets_no_maximum() -> None:
    target = Target("dev", "app", "app-1", FunctionSpec("f", False))
    assert containers_of(target) == CORES
