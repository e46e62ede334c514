"""Queue arguments: decided once, since RabbitMQ refuses to change them later."""

from __future__ import annotations

import pytest
from warren import exceptions
from warren.wire import naming, topology


def test_a_classic_function_queue_dead_letters_to_its_environment_s_dead_letter_queue() -> None:
    assert topology.function_queue_arguments("dev", "classic") == {
        "x-queue-type": "classic",
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


# -- with WARREN_QUEUE_TYPE=quorum ----------------------------------------------------------

GIVEN_UP = {
    "x-delivery-limit": topology.DELIVERY_LIMIT,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
TO_DEAD_LETTERS = {
    "x-dead-letter-exchange": naming.dead_letter_exchange(),
    "x-dead-letter-routing-key": naming.dead_letter_queue("dev"),
}

# Every durable queue kind that holds calls, results or state, as it is declared.
DURABLE_KINDS = {
    "function": lambda queue_type: topology.function_queue_arguments("dev", queue_type),
    "result": lambda queue_type: topology.result_queue_arguments(60, queue_type, "dev"),
    "call": lambda queue_type: topology.call_queue_arguments(60, queue_type),
    "dead letters": lambda queue_type: topology.dead_letter_queue_arguments(queue_type),
    "delay": lambda queue_type: topology.delay_queue_arguments("dev", 2500, queue_type),
    "orphans": lambda queue_type: topology.orphans_queue_arguments("dev", queue_type),
}


@pytest.mark.parametrize("kind", sorted(DURABLE_KINDS))
def test_with_quorum_every_queue_that_holds_calls_results_or_state_is_a_quorum_queue(
    kind: str,
) -> None:
    assert DURABLE_KINDS[kind]("quorum")["x-queue-type"] == "quorum"


@pytest.mark.parametrize("kind", ["function", "result", "orphans"])
def test_with_quorum_what_the_broker_gives_up_on_goes_to_the_environment_s_dead_letters(
    kind: str,
) -> None:
    arguments = DURABLE_KINDS[kind]("quorum")
    assert arguments.items() >= {**TO_DEAD_LETTERS, **GIVEN_UP}.items()


def test_with_quorum_a_delay_queue_still_sends_expired_retries_to_be_requeued() -> None:
    arguments = topology.delay_queue_arguments("dev", 2500, "quorum")
    assert arguments == {
        "x-queue-type": "quorum",
        "x-message-ttl": 2500,
        "x-dead-letter-exchange": naming.requeue_exchange("dev"),
        "x-expires": 2500 + topology.DELAY_QUEUE_LINGER_MS,
        **GIVEN_UP,
    }


def test_with_quorum_a_spawned_call_s_result_may_be_read_any_number_of_times_and_then_expires() -> (
    None
):
    # Each read puts the result back (a return the broker counts): no delivery limit;
    # and an expired result goes, it is not dead-lettered.
    assert topology.call_queue_arguments(60, "quorum") == {
        "x-queue-type": "quorum",
        "x-expires": 60_000,
        "x-message-ttl": 60_000,
    }


def test_with_quorum_dead_letters_can_be_read_any_number_of_times() -> None:
    assert topology.dead_letter_queue_arguments("quorum") == {
        "x-queue-type": "quorum",
        "x-message-ttl": topology.DEAD_LETTER_TTL_MS,
    }


def test_the_delivery_limit_is_far_above_what_warren_s_own_crash_handling_reaches() -> None:
    # WARREN_CRASH_LIMIT counts crashes per input (default 3); each crash sends inputs
    # again as new messages, so the broker's count of one message never nears it.
    assert topology.DELIVERY_LIMIT >= 100


@pytest.mark.parametrize("kind", sorted(DURABLE_KINDS))
def test_classic_queues_have_no_quorum_only_arguments(kind: str) -> None:
    arguments = DURABLE_KINDS[kind]("classic")
    assert arguments.get("x-queue-type", "classic") == "classic"
    assert not arguments.keys() & GIVEN_UP.keys()


def test_an_orphans_queue_is_declared_classic_as_always_without_arguments() -> None:
    assert topology.orphans_queue_arguments("dev") == {}


# -- a queue that exists with other arguments -----------------------------------------------

QUEUE = "warren.v1.dev.fn.app.f"


def test_a_queue_type_mismatch_names_the_queue_both_types_and_both_ways_out() -> None:
    text = (
        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{QUEUE}' in vhost "
        "'/': received 'quorum' but current is 'classic'"
    )
    message = str(topology.queue_mismatch(QUEUE, "quorum", text))
    assert f"{QUEUE!r} exists as a classic queue" in message
    assert "declares it as a quorum queue" in message
    assert f"rabbitmqctl delete_queue {QUEUE}" in message
    assert "WARREN_QUEUE_TYPE=classic again" in message


def test_a_queue_declared_without_a_type_counts_as_classic() -> None:
    text = (
        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{QUEUE}' in vhost "
        "'/': received the value 'quorum' of type 'longstr' but current is none"
    )
    assert "exists as a classic queue" in str(topology.queue_mismatch(QUEUE, "quorum", text))


def test_another_argument_s_mismatch_names_the_argument_and_both_values() -> None:
    text = (
        f"PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue '{QUEUE}' in "
        "vhost '/': received the value '1000' of type 'short' but current is none"
    )
    message = str(topology.queue_mismatch(QUEUE, "quorum", text))
    assert "x-delivery-limit=none" in message
    assert "x-delivery-limit=1000" in message


def test_a_refusal_of_another_shape_is_still_a_queue_mismatch_with_the_broker_s_words() -> None:
    error = topology.queue_mismatch(QUEUE, "quorum", "PRECONDITION_FAILED - something else")
    assert isinstance(error, exceptions.QueueMismatchError)
    assert "something else" in str(error)


def test_a_quorum_queue_declared_classic_is_told_apart_by_its_quorum_only_arguments() -> None:
    # RabbitMQ may compare x-dead-letter-strategy before x-queue-type
    text = (
        f"PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-strategy' for queue '{QUEUE}' "
        "in vhost '/': received none but current is the value 'at-least-once' of type 'longstr'"
    )
    message = str(topology.queue_mismatch(QUEUE, "classic", text))
    assert f"{QUEUE!r} exists as a quorum queue" in message
    assert "declares it as a classic queue" in message
    assert "WARREN_QUEUE_TYPE=quorum again" in message


def test_an_older_quorum_queue_without_a_delivery_limit_names_the_argument() -> None:
    text = (
        f"PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue '{QUEUE}' in "
        "vhost '/': received '1000' but current is '5'"
    )
    message = str(topology.queue_mismatch(QUEUE, "quorum", text))
    assert "exists with x-delivery-limit=5" in message
    assert "declares it with x-delivery-limit=1000" in message
