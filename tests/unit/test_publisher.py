"""What the engine publishes for its containers: a dead letter keeps the original's
identity, and says why and where from."""

from __future__ import annotations

import time

import aio_pika
from warren.wire import topology
from warren_engine.pipe.messages import DeadLetter
from warren_engine.publisher import CarriedProperties, dead_letter_message


def test_a_dead_letter_carries_over_the_original_s_properties_and_says_why() -> None:
    carried = CarriedProperties("m-1", "c-1", "results.q", "calls")
    before = int(time.time())
    message = dead_letter_message(
        b"body", reason="crashed 3 times", source_queue="fn.q", carried=carried
    )
    assert (message.message_id, message.correlation_id, message.reply_to, message.type) == (
        "m-1",
        "c-1",
        "results.q",
        "calls",
    )
    assert message.body == b"body"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.headers == {topology.REASON_HEADER: "crashed 3 times", "x-warren-queue": "fn.q"}
    # When it was dead-lettered, to the second AMQP timestamps carry
    assert message.timestamp is not None
    assert before <= message.timestamp.timestamp() <= time.time()


def test_a_dead_letter_of_a_message_nobody_vouches_for_carries_no_properties() -> None:
    message = dead_letter_message(
        b"?", reason="bad signature", source_queue="fn.q", carried=CarriedProperties()
    )
    assert (message.correlation_id, message.reply_to, message.type) == (None, None, None)


def test_a_container_s_dead_letter_names_every_property_the_publisher_carries() -> None:
    # The pool turns a DeadLetter's fields into CarriedProperties one for one.
    carried = set(CarriedProperties.__slots__)
    assert carried <= set(DeadLetter.__dataclass_fields__)
