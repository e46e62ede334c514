"""Cores for single-slot sync containers: least loaded first, spread again after exits."""

from __future__ import annotations

from engine.cores import CorePlacement, pinnable
from sdk.protocol import FunctionSpec


def test_containers_go_to_the_least_loaded_core_and_spread_again_when_some_exit() -> None:
    cores = CorePlacement([0, 1])
    assert [cores.take(name) for name in "abcd"] == [0, 1, 0, 1]
    assert cores.loads() == {0: 2, 1: 2}
    # When both containers of core 1 exit, one of core 0 moves over
    cores.give("b")
    assert cores.loads() == {0: 2, 1: 1}
    cores.give("d")
    assert cores.loads() == {0: 1, 1: 1}


def test_only_single_slot_sync_containers_without_a_cpu_limit_are_pinned() -> None:
    assert pinnable(FunctionSpec("f", is_async=False))
    assert not pinnable(FunctionSpec("f", is_async=True))
    assert not pinnable(FunctionSpec("f", is_async=False, max_inputs=4))
    assert not pinnable(FunctionSpec("f", is_async=False, cpu=[1.0, 2.0]))
    assert not CorePlacement([0]).enabled
