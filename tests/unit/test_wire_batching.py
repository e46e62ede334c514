"""Batches on the wire: cutting them within bounds, and a container's prefetch."""

from __future__ import annotations

import itertools
import random

import pytest
from warren.wire.batching import FETCH_AHEAD_SECONDS, PrefetchTuner, prefetch_for, slices_within


def test_a_count_of_one_puts_every_item_alone() -> None:
    assert slices_within([1, 1, 1], max_count=1, max_bytes=100) == [(0, 1), (1, 2), (2, 3)]


def test_items_that_fill_the_byte_budget_exactly_share_a_slice() -> None:
    assert slices_within([30, 70, 30, 70], max_count=10, max_bytes=100) == [(0, 2), (2, 4)]


def test_an_oversized_item_in_the_middle_goes_alone_and_its_neighbours_are_not_joined() -> None:
    sizes = [10, 10, 500, 10, 10]
    assert slices_within(sizes, max_count=10, max_bytes=100) == [(0, 2), (2, 3), (3, 5)]


def test_oversized_items_one_after_another_each_go_alone() -> None:
    assert slices_within([200, 300], max_count=10, max_bytes=100) == [(0, 1), (1, 2)]


@pytest.mark.parametrize("seed", range(20))
def test_slices_cover_every_item_once_in_order_within_both_bounds(seed: int) -> None:
    rng = random.Random(seed)
    sizes = [rng.randint(0, 120) for _ in range(rng.randint(0, 60))]
    max_count, max_bytes = rng.randint(1, 8), rng.randint(50, 300)
    slices = slices_within(sizes, max_count, max_bytes)
    # contiguous, in order, covering everything
    assert [i for start, end in slices for i in range(start, end)] == list(range(len(sizes)))
    for start, end in slices:
        assert 1 <= end - start <= max_count
        assert sum(sizes[start:end]) <= max_bytes or end - start == 1
    # greedy: the next item would not have fitted in the slice before it
    for (start, end), _ in itertools.pairwise(slices):
        assert end - start == max_count or sum(sizes[start : end + 1]) > max_bytes


def test_a_prefetch_fills_the_slots_and_fetches_none_ahead_while_run_times_are_unknown() -> None:
    assert prefetch_for(8, mean_size=1.0) == 8
    assert prefetch_for(8, mean_size=4.0) == 2
    assert prefetch_for(8, mean_size=3.0) == 3  # 3 messages of 3 cover 8 slots


def test_a_prefetch_counts_messages_of_a_mean_under_one_and_a_half_as_single_inputs() -> None:
    assert prefetch_for(10, mean_size=1.4, per_input=1.0) == 10
    assert prefetch_for(10, mean_size=1.6, per_input=1.0) == 5


def test_one_message_at_a_time_when_a_message_carries_more_than_the_slots() -> None:
    assert prefetch_for(4, mean_size=100.0, per_input=1.0) == 1


def test_a_large_message_of_fast_inputs_gets_none_fetched_ahead_when_it_runs_long() -> None:
    # 1,000 inputs of 0.1 ms on one slot: 100 ms a message, past the fetch-ahead limit
    assert FETCH_AHEAD_SECONDS <= 1000 * 1e-4
    assert prefetch_for(1, mean_size=1000.0, per_input=1e-4) == 1
    # 10 µs each: 10 ms a message, so the next one is fetched ahead
    assert prefetch_for(1, mean_size=1000.0, per_input=1e-5) == 2


def test_a_tuner_reports_a_change_only_when_its_prefetch_changes() -> None:
    tuner = PrefetchTuner(100)
    for size in [10] * 40 + [8] * 3 + [1] * 40:
        before = tuner.prefetch
        changed = tuner.observe(size, per_input=1.0)
        assert changed == (tuner.prefetch if tuner.prefetch != before else None)


def test_a_tuner_shrinks_at_once_and_grows_only_on_a_marked_change() -> None:
    # Given slow messages of 10 inputs to a container of 100 slots: 10 messages fill it
    tuner = PrefetchTuner(100)
    for _ in range(40):
        tuner.observe(10, per_input=1.0)
    assert tuner.prefetch == 10
    # When messages shrink a little (9 inputs: 12 would fill the slots), it keeps 10
    assert tuner.observe(8, per_input=1.0) is None
    assert prefetch_for(100, tuner.mean_size, 1.0) > tuner.prefetch
    assert tuner.prefetch == 10
    # And when they become single inputs it grows, back to one message per slot
    for _ in range(40):
        tuner.observe(1, per_input=1.0)
    assert tuner.prefetch == 100


def test_a_tuner_grows_from_a_prefetch_of_two_on_any_increase() -> None:
    # Given a prefetch of 2 (big fast messages to 10 slots: one, and one fetched ahead)
    tuner = PrefetchTuner(10)
    for _ in range(30):
        tuner.observe(1000, per_input=1e-6)
    assert tuner.prefetch == 2
    # When the messages get smaller, it takes the first increase, to 3, at once (a
    # larger prefetch would wait for a change to more than twice the current one)
    while tuner.prefetch == 2:
        tuner.observe(4, per_input=1e-6)
    assert tuner.prefetch == 3
