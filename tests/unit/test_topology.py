"""Queue arguments: decided once, since RabbitMQ refuses to change them later."""

from __future__ import annotations

import pytest
from warren.wire import naming, topology


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_function_queue_dead_letters_to_its_environment_s_dead_letter_queue(
    queue_type: str,
) -> None:
    assert topology.function_queue_arguments("dev", queue_type) == {
        "x-queue-type": queue_type,
        "x-dead-letter-exchange": naming.dead_letter_exchange(),
        "x-dead-letter-routing-key": naming.dead_letter_queue("dev"),
    }


def test_environments_dead_letter_to_queues_of_their_own() -> None:
    dev = topology.function_queue_arguments("dev", "classic")
    prod = topology.function_queue_arguments("prod", "classic")
    assert dev["x-dead-letter-routing-key"] != prod["x-dead-letter-routing-key"]


def test_a_result_queue_expires_after_the_given_seconds_in_whole_milliseconds() -> None:
    assert topology.result_queue_arguments(1.5) == {"x-queue-type": "classic", "x-expires": 1500}
    assert topology.result_queue_arguments(0.0015)["x-expires"] == 1


def test_a_marker_queue_is_classic_so_that_it_is_lost_exactly_when_transient_messages_are() -> None:
    assert topology.marker_queue_arguments(60) == {"x-queue-type": "classic", "x-expires": 60_000}


def test_a_spawned_call_s_queue_and_its_result_both_last_the_retention_period() -> None:
    assert topology.call_queue_arguments(86_400) == {
        "x-queue-type": "classic",
        "x-expires": 86_400_000,
        "x-message-ttl": 86_400_000,
    }


def test_a_retention_under_a_millisecond_still_makes_valid_arguments() -> None:
    # RabbitMQ refuses an x-expires of 0
    arguments = topology.call_queue_arguments(0.0)
    assert arguments["x-expires"] == arguments["x-message-ttl"] == 1


def test_dead_letters_are_kept_for_a_week() -> None:
    assert topology.dead_letter_queue_arguments() == {
        "x-queue-type": "classic",
        "x-message-ttl": 7 * 24 * 3600 * 1000,
    }


def test_a_delay_queue_holds_messages_for_its_delay_then_sends_them_to_be_requeued() -> None:
    assert topology.delay_queue_arguments("dev", 2500) == {
        "x-queue-type": "classic",
        "x-message-ttl": 2500,
        "x-dead-letter-exchange": naming.requeue_exchange("dev"),
        "x-expires": 2500 + topology.DELAY_QUEUE_LINGER_MS,
    }


def test_an_unused_delay_queue_outlives_its_last_message() -> None:
    arguments = topology.delay_queue_arguments("dev", 10)
    assert arguments["x-expires"] > arguments["x-message-ttl"]


def test_the_delay_header_is_one_a_headers_exchange_matches_on() -> None:
    # A headers exchange ignores binding arguments starting with "x-": every message
    # would then match every delay queue.
    assert not topology.DELAY_HEADER.startswith("x-")
