"""A map's output buffer: input order, duplicates dropped, and what it holds."""

from __future__ import annotations

import pytest
from warren.client.reorder_buffer import OutputBuffer


def _sent(buffer: OutputBuffer[str], count: int) -> list[int]:
    return [buffer.sent_index() for _ in range(count)]


def test_inputs_are_numbered_from_zero_in_the_order_they_are_sent() -> None:
    buffer: OutputBuffer[str] = OutputBuffer(ordered=True)
    assert _sent(buffer, 4) == [0, 1, 2, 3]
    assert (buffer.sent, buffer.outstanding, buffer.holding) == (4, 4, 4)


def test_an_ordered_buffer_holds_back_results_until_the_head_of_line_arrives() -> None:
    # Given three inputs sent, whose results arrive last first
    buffer: OutputBuffer[str] = OutputBuffer(ordered=True)
    _sent(buffer, 3)
    buffer.add(2, "c")
    buffer.add(1, "b")
    # Then nothing is released while input 0 is out, and both are still held
    assert buffer.release() == []
    assert (buffer.outstanding, buffer.holding) == (1, 3)
    # When the head of line arrives, all three go out in input order
    buffer.add(0, "a")
    assert buffer.release() == [(0, "a"), (1, "b"), (2, "c")]
    assert (buffer.outstanding, buffer.holding) == (0, 0)


def test_an_ordered_buffer_releases_only_the_contiguous_prefix_when_a_gap_remains() -> None:
    buffer: OutputBuffer[str] = OutputBuffer(ordered=True)
    _sent(buffer, 4)
    for index in (0, 1, 3):
        buffer.add(index, str(index))
    assert buffer.release() == [(0, "0"), (1, "1")]
    # input 2 is still out: 3 waits behind it
    assert buffer.release() == []
    buffer.add(2, "2")
    assert buffer.release() == [(2, "2"), (3, "3")]


def test_an_unordered_buffer_releases_results_in_the_order_they_arrive() -> None:
    buffer: OutputBuffer[str] = OutputBuffer(ordered=False)
    _sent(buffer, 3)
    buffer.add(2, "c")
    buffer.add(0, "a")
    assert buffer.release() == [(2, "c"), (0, "a")]
    assert (buffer.outstanding, buffer.holding) == (1, 1)


@pytest.mark.parametrize("ordered", [True, False])
def test_a_release_stops_at_its_limit_and_the_rest_follows_next_time(ordered: bool) -> None:
    buffer: OutputBuffer[str] = OutputBuffer(ordered=ordered)
    for index in _sent(buffer, 5):
        buffer.add(index, str(index))
    assert buffer.release(limit=2) == [(0, "0"), (1, "1")]
    assert buffer.holding == 3
    assert buffer.release(limit=2) == [(2, "2"), (3, "3")]
    assert buffer.release() == [(4, "4")]
    assert buffer.holding == 0


@pytest.mark.parametrize("ordered", [True, False])
def test_a_second_result_for_one_input_is_dropped_when_the_first_was_accepted(
    ordered: bool,
) -> None:
    # Given an input whose result arrived (and, for one case, was released)
    buffer: OutputBuffer[str] = OutputBuffer(ordered=ordered)
    _sent(buffer, 2)
    assert buffer.add(0, "first")
    # When a redelivered copy of the input ran again and its result arrives too
    assert not buffer.add(0, "again")
    assert buffer.release() == [(0, "first")]
    assert not buffer.add(0, "after release")
    # Then the caller sees the first result only, and the buffer's counts are unchanged
    assert buffer.release() == []
    assert (buffer.outstanding, buffer.holding) == (1, 1)


@pytest.mark.parametrize("index", [-1, 1, 100])
def test_a_result_for_an_input_never_sent_is_dropped(index: int) -> None:
    buffer: OutputBuffer[str] = OutputBuffer(ordered=True)
    _sent(buffer, 1)
    assert not buffer.add(index, "stray")
    assert buffer.release() == []
    assert (buffer.outstanding, buffer.holding) == (1, 1)


def test_holding_counts_results_waiting_behind_a_slow_input_and_inputs_still_out() -> None:
    # Given a slow head-of-line input and many fast ones behind it
    buffer: OutputBuffer[int] = OutputBuffer(ordered=True)
    for index in _sent(buffer, 100)[1:]:
        buffer.add(index, index)
    # Then all 100 are held (this is what the map's window bounds), though one is out
    assert buffer.release() == []
    assert (buffer.outstanding, buffer.holding) == (1, 100)
    buffer.add(0, 0)
    assert [value for _, value in buffer.release()] == list(range(100))
    assert buffer.holding == 0
