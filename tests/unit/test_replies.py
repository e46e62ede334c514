"""A container's replies: results batched per caller, acks only after confirms, retries.

The replies object publishes on a channel it is handed and settles messages on the channel
they came on; here a small recording object stands in for that channel (what was
published and settled, and the confirms the broker would send), and another for the
engine's end of the container's pipe.
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

import pytest
import warren_engine.container.replies as replies_module
from warren.exceptions import EngineError
from warren.wire import naming
from warren.wire.amqp import BrokerError, Channel, Delivery, Nacked, Properties
from warren.wire.protocol import KIND_RESULTS, CallBatch, ResultBatch, ResultItem
from warren.wire.signing import CALL_RESULT_VALIDITY, Signer
from warren.wire.spec import FunctionSpec
from warren_engine.container.inbound import Inbound
from warren_engine.container.replies import (
    MAX_RESULTS_PER_MESSAGE,
    PERSISTENT,
    TRANSIENT,
    HeldMessage,
    Replies,
)
from warren_engine.pipe.messages import Done, Query, Requeue
from warren_engine.pipe.pipes import EngineLink

EXCHANGE = "warren.v1.replies"
CALLER = naming.result_queue("dev", "client1")
SPAWNED = naming.call_queue("dev", "call1")
INVOCATION = "inv1"


class Published:
    def __init__(self, body: bytes, exchange: str, routing_key: str, properties: Properties):
        self.body = body
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties


class RecordingChannel:
    """Records publishes and settlements; confirms at once unless told otherwise."""

    def __init__(self) -> None:
        self.connection = self
        self.published: list[Published] = []
        self.acks: list[tuple[int, bool]] = []
        self.nacks: list[tuple[int, bool]] = []
        self.publish_error: BaseException | None = None
        self.confirm_error: BaseException | None = None
        self.refusals = 0  # how many publishes, from now, the broker refuses (nacks)
        self.opened = self.retired = 0
        self.confirms: list[asyncio.Future[None]] = []
        self.confirm_at_once = True

    async def drain(self) -> None:
        pass

    async def channel(self, *, confirm: bool = False) -> RecordingChannel:
        """A new channel (the same records: one broker, as far as the tests look)."""
        assert confirm
        self.opened += 1
        return self

    async def retire(self) -> None:
        self.retired += 1

    def publish(
        self, body: bytes, *, exchange: str, routing_key: str, properties: Properties
    ) -> asyncio.Future[None]:
        if self.publish_error is not None:
            raise self.publish_error
        self.published.append(Published(body, exchange, routing_key, properties))
        confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refusals > 0:
            self.refusals -= 1
            confirm.set_exception(Nacked("the broker refused it"))
        elif self.confirm_error is not None:
            confirm.set_exception(self.confirm_error)
        elif self.confirm_at_once:
            confirm.set_result(None)
        self.confirms.append(confirm)
        return confirm

    def ack(self, delivery_tag: int, *, lazy: bool = False) -> None:
        self.acks.append((delivery_tag, lazy))

    def nack(self, delivery_tag: int, *, requeue: bool = True) -> None:
        self.nacks.append((delivery_tag, requeue))


class RecordingLink:
    """The container's end of its pipe to the engine: records requests."""

    def __init__(self) -> None:
        self.requests: list[Query] = []
        self.error: BaseException | None = None

    async def request(self, query: Query) -> Done:
        if self.error is not None:
            raise self.error
        self.requests.append(query)
        return Done()


class Container:
    """The replies object with its stand-ins, and what it released."""

    def __init__(self, spec: FunctionSpec | None = None, lazy_acks: bool = False) -> None:
        self.channel = RecordingChannel()
        self.link = RecordingLink()
        self.signer = Signer(b"k" * 32, max_size=1 << 20, expiry=60)
        self.released: list[HeldMessage] = []
        self.replies = Replies(
            spec or FunctionSpec("app.f", False),
            self.signer,
            cast(EngineLink, self.link),
            self.released.append,
            lambda: lazy_acks,
        )
        self.replies.open(cast(Channel, self.channel), EXCHANGE)

    def held(self, tag: int, inputs: int = 1, reply_to: str | None = CALLER) -> HeldMessage:
        properties = Properties(reply_to=reply_to, correlation_id=INVOCATION)
        delivery = Delivery(cast(Channel, self.channel), tag, False, "", "q", properties, b"")
        batch = CallBatch(INVOCATION, [(i, 0, b"in") for i in range(inputs)])
        return HeldMessage(Inbound(delivery), batch, inputs, int(time.time()) + 600)

    def results(self, published: Published) -> list[ResultItem]:
        envelope = self.signer.open(
            published.body, kind=KIND_RESULTS, correlation_id=published.properties.correlation_id
        )
        return ResultBatch.from_body(envelope.body).items


def result(index: int, data: bytes = b"out") -> ResultItem:
    return (INVOCATION, index, 0, 0, data, 0.001)


async def test_results_for_one_caller_go_out_in_one_message_acked_after_its_confirm() -> None:
    # Given two messages' results, added in one turn of the loop
    container = Container()
    first, second = container.held(1), container.held(2)
    container.replies.add(result(0), first)
    container.replies.add(result(1), second)
    # When the replies have gone out
    await container.replies.drain()
    # Then one transient message carried both to their caller, and both messages are acked
    [published] = container.channel.published
    assert (published.exchange, published.routing_key) == (EXCHANGE, CALLER)
    assert published.properties.delivery_mode == TRANSIENT
    assert published.properties.message_type == KIND_RESULTS
    assert published.properties.correlation_id == INVOCATION
    assert container.results(published) == [result(0), result(1)]
    assert container.channel.acks == [(1, False), (2, False)]
    assert container.released == [first, second]
    assert not container.replies.busy


async def test_results_for_different_callers_go_out_in_a_message_each() -> None:
    container = Container()
    other = naming.result_queue("dev", "client2")
    container.replies.add(result(0), container.held(1, reply_to=CALLER))
    container.replies.add(result(1), container.held(2, reply_to=other))
    container.replies.add(result(2), container.held(3, reply_to=CALLER))
    await container.replies.drain()
    by_caller = {p.routing_key: container.results(p) for p in container.channel.published}
    assert by_caller == {CALLER: [result(0), result(2)], other: [result(1)]}


async def test_a_spawned_call_s_result_is_persistent_and_valid_as_long_as_it_is_kept() -> None:
    container = Container()
    container.replies.add(result(0), container.held(1, reply_to=SPAWNED))
    await container.replies.drain()
    [published] = container.channel.published
    assert published.properties.delivery_mode == PERSISTENT
    envelope = container.signer.open(published.body, correlation_id=INVOCATION)
    assert envelope.expires_at >= time.time() + CALL_RESULT_VALIDITY - 60


async def test_many_results_for_one_caller_are_split_into_messages_of_at_most_the_limit() -> None:
    container = Container()
    count = MAX_RESULTS_PER_MESSAGE + 1
    message = container.held(1, inputs=count)
    for index in range(count):
        container.replies.add(result(index), message)
    await container.replies.drain()
    sizes = [len(container.results(p)) for p in container.channel.published]
    assert sizes == [MAX_RESULTS_PER_MESSAGE, 1]
    assert container.channel.acks == [(1, False)]


async def test_a_message_of_several_inputs_is_acked_once_when_its_last_result_is_confirmed() -> (
    None
):
    # Given one message carrying three inputs
    container = Container()
    message = container.held(7, inputs=3)
    # When the results of two of them are out, it is not acked yet
    for index in (0, 1):
        container.replies.add(result(index), message)
        await container.replies.drain()
    assert container.channel.acks == [] and container.released == []
    # Then the third result settles it, once
    container.replies.add(result(2), message)
    await container.replies.drain()
    assert container.channel.acks == [(7, False)]
    assert container.released == [message]


async def test_acks_are_lazy_when_the_container_says_they_may_wait() -> None:
    container = Container(lazy_acks=True)
    container.replies.add(result(0), container.held(1))
    await container.replies.drain()
    assert container.channel.acks == [(1, True)]


async def test_a_message_is_not_acked_when_its_result_is_not_published() -> None:
    # Given a publish the broker never confirms (the channel failed)
    container = Container()
    container.channel.confirm_error = BrokerError("channel closed")
    message = container.held(1)
    container.replies.add(result(0), message)
    await container.replies.drain()
    # Then the message goes back to its queue instead, to run again
    assert container.channel.acks == []
    assert container.channel.nacks == [(1, True)]
    assert container.released == [message]


async def test_a_message_goes_back_to_its_queue_when_publishing_fails_at_once() -> None:
    container = Container()
    container.channel.publish_error = RuntimeError("the channel is closed")
    container.replies.add(result(0), container.held(1))
    container.replies.add(result(0), container.held(2))
    await container.replies.drain()
    assert container.channel.acks == []
    assert container.channel.nacks == [(1, True), (2, True)]


async def test_a_result_nobody_waits_for_is_not_published_and_its_message_is_acked() -> None:
    container = Container()
    container.replies.add(result(0), container.held(1, reply_to=None))
    await container.replies.drain()
    assert container.channel.published == []
    assert container.channel.acks == [(1, False)]


async def test_a_message_with_an_abandoned_input_goes_back_to_its_queue_whole() -> None:
    container = Container()
    message = container.held(1, inputs=2)
    message.abandoned = True
    await container.replies.settle(message, count=2)
    assert container.channel.nacks == [(1, True)] and container.channel.acks == []
    assert container.released == [message]


async def test_settling_a_message_settled_already_does_nothing() -> None:
    container = Container()
    message = container.held(1)
    message.message.nack(requeue=True)
    await container.replies.settle(message)
    assert container.channel.nacks == [(1, True)] and container.channel.acks == []
    assert container.released == []


async def test_a_failed_input_with_attempts_left_is_requeued_by_the_engine_after_a_delay() -> None:
    # Given a function with retries that start 1.5 s apart, and an input that failed once
    container = Container(FunctionSpec("app.f", False, max_retries=2, initial_delay=1.5))
    message = container.held(4, inputs=2)
    # When its retry goes through the replies (without a result to publish)
    container.replies.add(None, message, retry=(message, 1, 0, b"in"))
    await container.replies.settle(message)  # the other input was accounted for
    await container.replies.drain()
    # Then the engine is asked to requeue that input alone, its failure counted
    [requeue] = container.link.requests
    assert isinstance(requeue, Requeue)
    assert requeue.delay_ms == 1500 and requeue.replaces is None
    assert (requeue.correlation_id, requeue.reply_to) == (INVOCATION, CALLER)
    [body] = requeue.bodies
    envelope = container.signer.open(body, reply_to=CALLER, correlation_id=INVOCATION)
    assert CallBatch.from_body(envelope.body) == CallBatch(INVOCATION, [(1, 0, b"in")], failures=1)
    # And it keeps the expiry its message came with
    assert envelope.expires_at == message.expires_at
    # And the message it came in is acked, once the requeue is done
    assert container.channel.published == []
    assert container.channel.acks == [(4, False)]


async def test_a_message_goes_back_to_its_queue_when_the_engine_cannot_requeue_a_retry() -> None:
    container = Container(FunctionSpec("app.f", False, max_retries=1))
    container.link.error = EngineError("the engine is stopping")
    message = container.held(1)
    container.replies.add(None, message, retry=(message, 0, 0, b"in"))
    await container.replies.drain()
    assert container.channel.acks == []
    assert container.channel.nacks == [(1, True)]


async def test_a_drain_with_a_timeout_stops_waiting_but_leaves_the_flush_running() -> None:
    # Given a result whose confirm does not come
    container = Container()
    container.channel.confirm_at_once = False
    container.replies.add(result(0), container.held(1))
    # When a drain runs out of time, the replies are still busy, and nothing was settled
    await asyncio.wait_for(container.replies.drain(timeout=0.01), 1.0)
    assert container.replies.busy and container.channel.acks == []
    # Then the confirm still settles the message
    container.channel.confirms[0].set_result(None)
    await container.replies.drain()
    assert container.channel.acks == [(1, False)]


@pytest.mark.parametrize("error", [BrokerError("gone"), OSError("reset")])
async def test_every_message_of_a_failed_flush_goes_back_once(error: BaseException) -> None:
    container = Container()
    container.channel.confirm_error = error
    messages = [container.held(tag) for tag in (1, 2, 3)]
    for index, message in enumerate(messages):
        container.replies.add(result(index), message)
    await container.replies.drain()
    assert container.channel.nacks == [(1, True), (2, True), (3, True)]
    assert container.released == messages


async def test_a_refused_result_is_published_again_and_its_input_does_not_run_again() -> None:
    # Given a broker that refuses a result three times (its queue has no leader yet)
    container = Container()
    container.channel.refusals = 3
    message = container.held(1)
    container.replies.add(result(0), message)
    # When the replies have gone out
    await container.replies.drain()
    # Then the same message was published four times, on a new channel after each
    # refusal (the refused one closed once settled), and its input acked, not requeued
    bodies = [published.body for published in container.channel.published]
    assert len(bodies) == 4 and len(set(bodies)) == 1
    assert container.channel.opened == container.channel.retired == 3
    assert container.channel.acks == [(1, False)] and container.channel.nacks == []
    assert container.released == [message]


async def test_results_refused_past_the_limit_send_their_inputs_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a broker that refuses for longer than the container waits
    monkeypatch.setattr(replies_module, "REFUSALS_GIVEN_UP_AFTER", 0.2)
    container = Container()
    container.channel.refusals = 1_000_000
    container.replies.add(result(0), container.held(1))
    await asyncio.wait_for(container.replies.drain(), 5)
    # Then the input goes back to its queue, after a few attempts rather than thousands
    assert container.channel.nacks == [(1, True)] and container.channel.acks == []
    assert 2 <= len(container.channel.published) <= 10
