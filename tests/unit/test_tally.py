"""What a container counts of its inputs, and the publish time a caller's message id carries."""

from __future__ import annotations

import time
import uuid

import pytest
from warren.client.publisher import message_id, published_at
from warren_engine.pipe.tally import SECONDS_BUCKETS, Histogram, Tally


def test_a_value_on_a_bound_falls_in_that_bound_s_bucket_and_beyond_the_last_in_inf() -> None:
    seen = Histogram()
    for seconds in (0.001, 0.0011, 1800.0, 1800.5, 0.0):
        seen.observe(seconds)
    assert seen.counts[0] == 2  # 0.0 and 0.001: at or below the first bound
    assert seen.counts[1] == 1
    assert seen.counts[SECONDS_BUCKETS.index(1800.0)] == 1
    assert seen.counts[-1] == 1  # +Inf
    assert seen.cumulative()[-1] == seen.count == 5
    assert seen.total == pytest.approx(3600.5021)


def test_the_cumulative_buckets_never_go_down_and_end_at_the_count() -> None:
    seen = Histogram()
    for seconds in (0.3, 0.3, 12.0, 0.002):
        seen.observe(seconds)
    buckets = seen.cumulative()
    assert buckets == sorted(buckets)
    assert len(buckets) == len(SECONDS_BUCKETS) + 1 and buckets[-1] == 4


def test_the_difference_of_two_reports_is_added_once_whatever_came_between() -> None:
    # Given a container's reports at two moments
    container = Tally()
    container.received, container.succeeded = 5, 2
    container.run_seconds.observe(0.01)
    first = container.copy()
    container.received += 3
    container.succeeded += 4
    container.failed += 1
    container.retried += 2
    container.timed_out += 1
    container.run_seconds.observe(2.0)
    container.queue_wait.observe(0.5)
    second = container.copy()
    # When the engine adds each report's difference from the one before
    engine = Tally()
    engine.add_difference(first, Tally())
    engine.add_difference(second, first)
    engine.add_difference(second, second)  # the same report again adds nothing
    # Then it has what the container counted, and the copies were not changed meanwhile
    assert engine == second
    assert (first.received, first.run_seconds.count) == (5, 1)
    assert engine.outcomes == 4 + 2 + 1 + 2


def test_a_caller_s_message_id_is_a_uuid7_that_says_when_it_was_published() -> None:
    before = time.time()
    ids = [message_id() for _ in range(1000)]
    after = time.time()
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert all(len(one) == 32 for one in ids)
    for one in ids:
        published = published_at(one)
        assert published is not None
        assert before - 0.001 <= published <= after


@pytest.mark.parametrize(
    "other", [None, "", uuid.uuid4().hex, "not-an-id", "zzzzzzzzzzzz7zzzazzzzzzzzzzzzzzz", "m-1"]
)
def test_any_other_message_id_carries_no_publish_time(other: str | None) -> None:
    assert published_at(other) is None
