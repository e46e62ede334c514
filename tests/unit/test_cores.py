"""Cores for single-slot sync containers: least loaded first, spread again after exits."""

from __future__ import annotations

import subprocess
import sys

from warren.wire.spec import FunctionSpec
from warren_engine.pool.cores import CorePlacement, pin_process, pinnable


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


def test_a_functions_containers_spread_over_the_cores_whatever_else_runs_there() -> None:
    # Given a function whose one container took core 0, and another function's on core 1
    cores = CorePlacement([0, 1])
    assert cores.take("add-1", "add") == 0
    assert cores.take("burn-1", "burn") == 1
    # When each function starts its second container
    # Then each goes where its function has none, though both cores hold one container
    assert cores.take("add-2", "add") == 1
    assert cores.take("burn-2", "burn") == 0
    assert cores.loads() == {0: 2, 1: 2}


def test_a_rebalance_never_puts_two_containers_of_one_function_on_one_core() -> None:
    # Given two cores, each running one container of functions a, b and c
    cores = CorePlacement([0, 1])
    for name in ("a-1", "b-1", "b-2", "a-2", "c-1", "c-2"):
        cores.take(name, name[0])
    assert cores.loads() == {0: 3, 1: 3}
    assert {cores.where(f"{f}-1") for f in "abc"} | {cores.where(f"{f}-2") for f in "abc"} == {0, 1}
    # When core 0 loses two of its containers, one container of core 1 moves over
    for name in ("a-1", "b-1", "b-2", "a-2", "c-1", "c-2"):
        if cores.where(name) == 0 and name[0] != "a":
            cores.give(name)
    assert cores.loads() == {0: 2, 1: 2}
    # Then it is not the other container of a: each function is still spread
    assert cores.where("a-1") != cores.where("a-2")


def test_pinning_a_process_that_has_just_exited_does_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pin_process(gone.pid, 0)  # its /proc entry is gone: no error
