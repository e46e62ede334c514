"""The batch sizer: its learning and its bounds (its main policy is in test_protocol.py)."""

from __future__ import annotations

import pytest
from warren.client.batch_sizer import TARGET_BATCH_SECONDS, BatchSizer
from warren.wire.batching import MAX_BATCH_INPUTS


def test_a_message_carries_at_least_one_input_when_nothing_is_ready() -> None:
    sizer = BatchSizer()
    assert sizer.size(ready=0, max_inputs=10, containers=4) == 1
    sizer.observe(10.0)
    assert sizer.size(ready=0, max_inputs=10, containers=4) == 1


@pytest.mark.parametrize("seconds", [0.0, 1e-9])
def test_a_message_carries_at_most_the_batch_limit_when_inputs_take_no_time(
    seconds: float,
) -> None:
    sizer = BatchSizer()
    sizer.observe(seconds)
    assert sizer.size(ready=10**6, max_inputs=1, containers=1) == MAX_BATCH_INPUTS


def test_the_spread_is_clamped_to_the_batch_limit_when_a_container_runs_more_than_it() -> None:
    sizer = BatchSizer()
    assert sizer.size(ready=10_000, max_inputs=5_000, containers=1) == MAX_BATCH_INPUTS


def test_no_containers_known_counts_as_one_container() -> None:
    sizer = BatchSizer()
    assert sizer.size(ready=8, max_inputs=8, containers=0) == 8
    assert sizer.sendable(100, max_inputs=3, containers=0, in_flight=0) == 3


def test_a_probe_sends_nothing_when_more_is_in_flight_than_the_slots() -> None:
    sizer = BatchSizer()
    assert sizer.sendable(100, max_inputs=2, containers=2, in_flight=7) == 0
    assert sizer.sendable(0, max_inputs=2, containers=2, in_flight=0) == 0


def test_the_estimate_moves_a_fifth_of_the_way_towards_each_later_run_time() -> None:
    sizer = BatchSizer()
    sizer.observe(1e-3)
    sizer.observe(2e-3)  # estimate 1.2 ms: 41 inputs make 50 ms (one more would be 2 ms)
    assert sizer.size(ready=1, max_inputs=1, containers=1) == 41


def test_the_batch_size_converges_when_run_times_become_steady() -> None:
    # Given a function first seen as very fast
    sizer = BatchSizer()
    sizer.observe(1e-6)
    assert sizer.size(ready=1, max_inputs=1, containers=1) == MAX_BATCH_INPUTS
    # When its inputs then take 1 ms each, time after time
    for _ in range(60):
        sizer.observe(1e-3)
    # Then a message carries about TARGET_BATCH_SECONDS of them
    assert sizer.size(ready=1, max_inputs=1, containers=1) == round(TARGET_BATCH_SECONDS / 1e-3)


def test_a_probe_timeout_never_lowers_a_longer_estimate() -> None:
    # Given a function known to take 10 ms an input (5 a message)
    sizer = BatchSizer()
    sizer.observe(1e-2)
    assert sizer.size(ready=1, max_inputs=1, containers=1) == 5
    # When a later probe saw no result within 1 ms
    sizer.relearn()
    sizer.at_least(1e-3)
    # Then the estimate stays 10 ms (not 1 ms, which would make 50 a message)
    assert sizer.known
    assert sizer.size(ready=1, max_inputs=1, containers=1) == 5


def test_relearning_before_anything_was_learned_still_probes() -> None:
    sizer = BatchSizer()
    sizer.relearn()
    assert not sizer.known
    assert sizer.sendable(100, max_inputs=1, containers=2, in_flight=0) == 2
    sizer.observe(1e-5)
    assert sizer.known


def test_later_results_of_a_map_move_the_estimate_instead_of_replacing_it() -> None:
    # Given a map whose first result replaced an earlier estimate (see test_protocol.py)
    sizer = BatchSizer()
    sizer.observe(1e-6)
    sizer.relearn()
    sizer.observe(1e-3)
    # When its second result is 2 ms, the estimate moves to 1.2 ms, not to 2 ms
    sizer.observe(2e-3)
    assert sizer.size(ready=1, max_inputs=1, containers=1) == 41
