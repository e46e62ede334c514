"""The messages between a container and its engine: typed, compact, and checked."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
from typing import Any, get_args

import pytest
from warren.config import Settings
from warren.exceptions import EngineError
from warren.wire.codec import packb, unpackb
from warren.wire.spec import FunctionSpec
from warren_engine.container.container import ContainerConfig, FunctionConfig
from warren_engine.pipe.messages import (
    ANSWERS,
    Answered,
    AskVerdict,
    DeadLetter,
    Done,
    Dropped,
    Event,
    Failed,
    Query,
    Raised,
    Ready,
    Refused,
    Reply,
    Request,
    Requeue,
    Response,
    Status,
    Verdict,
    decode_event,
    decode_reply,
    encode,
)
from warren_engine.pipe.pipes import EngineLink, PipeReader
from warren_engine.pipe.tally import SECONDS_BUCKETS, Tally
from warren_engine.pool.autoscaler import Autoscaling
from warren_engine.pool.cancel_memory import CancelMemory
from warren_engine.pool.pool import ContainerPool
from warren_engine.publisher import Republisher


def _tally() -> Tally:
    tally = Tally(received=4, succeeded=2, failed=1, retried=3, timed_out=1)
    for seconds in (0.0004, 0.2, 7.0, 4000.0):
        tally.run_seconds.observe(seconds)
    tally.queue_wait.observe(0.03)
    return tally


TALLY = _tally()
ZEROS = [0] * (len(SECONDS_BUCKETS) + 1)
QUERIES: list[Query] = [
    AskVerdict("0123456789abcdef0123456789abcdef"),
    Requeue((b"one", b"two"), correlation_id="c", reply_to="r", delay_ms=1500, replaces="m"),
    Requeue((), correlation_id=None, reply_to=None),
    DeadLetter(b"body", "bad signature"),
    DeadLetter(
        b"body",
        "crashed 3 times",
        message_id="m",
        correlation_id="c",
        reply_to="r",
        type="call",
        replaces="m",
    ),
]
RESPONSES: list[Response] = [Verdict("crashed"), Done()]
EVENTS: list[Event] = [
    Ready(),
    Failed("ImportError", "no module named app", "Traceback (most recent call last): ..."),
    Status(running=3, idle_for=0.0, batch=2.5, messages=10, inputs=25),
    Status(running=0, idle_for=1.5, batch=1.0, messages=2, inputs=2, tally=TALLY),
    Raised(1.7e9, "0123abcd", 4, 2, True, "ValueError", "bad", "Traceback ...", unreported=3),
    Dropped(),
    *(Request(index + 1, query) for index, query in enumerate(QUERIES)),
]
REPLIES: list[Reply] = [
    *(Answered(index + 1, response) for index, response in enumerate(RESPONSES)),
    Refused(7, "ConnectionError: the broker is away"),
]


@pytest.mark.parametrize("event", EVENTS, ids=repr)
def test_every_event_comes_out_of_the_status_pipe_as_it_went_in(event: Event) -> None:
    assert decode_event(encode(event)) == event


@pytest.mark.parametrize("reply", REPLIES, ids=repr)
def test_every_reply_comes_out_of_the_replies_pipe_as_it_went_in(reply: Reply) -> None:
    assert decode_reply(encode(reply)) == reply


def test_every_kind_is_exercised_and_has_a_tag_of_its_own() -> None:
    kinds = [*get_args(Event), *get_args(Reply), *get_args(Query), *get_args(Response)]
    tags = [kind.TAG for kind in kinds]
    assert len(set(tags)) == len(tags)
    seen = {type(m) for m in [*EVENTS, *REPLIES, *QUERIES, *RESPONSES]}
    assert seen == set(kinds)
    assert set(ANSWERS) == set(get_args(Query))


def test_a_status_report_is_a_short_array_not_a_map() -> None:
    data = encode(Status(running=1, idle_for=0.0, batch=1.0, messages=1, inputs=1))
    assert unpackb(data) == [Status.TAG, 1, 0.0, 1.0, 1, 1, 0, 0, 0, 0, 0, ZEROS, 0.0, ZEROS, 0.0]
    assert len(data) < 96  # four times a second from every container: the tally is flat ints


def test_a_whole_number_is_read_as_a_float_where_a_number_is_expected() -> None:
    decoded = decode_event(packb([Status.TAG, 0, 2, 1, 4, 4, 0, 0, 0, 0, 0, ZEROS, 0, ZEROS, 0]))
    assert decoded == Status(running=0, idle_for=2.0, batch=1.0, messages=4, inputs=4)
    assert isinstance(decoded, Status) and type(decoded.idle_for) is float
    assert type(decoded.tally.run_seconds.total) is float


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"\xc1", "undecodable"),
        (packb([Ready.TAG]) + b"\x00", "undecodable"),  # trailing bytes
        (packb({"event": "ready"}), "malformed message"),
        (packb([]), "malformed message"),
        (packb(["ready"]), "malformed message"),
        (packb([99]), "unknown kind 99"),
        (
            packb([Ready.TAG, 1]),
            "Ready message on a container pipe: 1 fields where 0 were expected",
        ),
        (
            packb([Failed.TAG, "ImportError"]),
            "Failed message on a container pipe: it ends where a str",
        ),
        (packb([Status.TAG, "3", 0.0, 1.0, 1, 1]), "field 1 is a str, not an int"),
        (
            packb([Status.TAG, 0, 0.0, 1.0, 1, 1, 0, 0, 0, 0, 0, [0, 1], 0.0, ZEROS, 0.0]),
            "field 11 has 2 counts where 18 were expected",
        ),
        (
            packb([Status.TAG, 0, 0.0, 1.0, 1, 1, 0, 0, 0, 0, 0, ZEROS, 0.0, [1.5], 0.0]),
            "field 13 is a list, not an array of ints",
        ),
        (packb([Status.TAG, 0, 0.0, 1.0, 1, 1]), "Status message on a container pipe: it ends"),
        (packb([Status.TAG, True, 0.0, 1.0, 1, 1]), "field 1 is a bool, not an int"),
        (packb([Status.TAG, 1, None, 1.0, 1, 1]), "field 2 is a NoneType, not a number"),
        (packb([Raised.TAG, 1.0, "c", 0, 1, 1, "E", "m", "t", 0]), "field 5 is a int, not a bool"),
        (packb([Request.TAG, 1, [42]]), "unknown kind 42 on a container pipe where a query"),
        (packb([Request.TAG, 1, "verdict"]), "field 2 is a str, not a query"),
        (packb([Request.TAG, 1, [Verdict.TAG, "crashed"]]), "where a query belongs"),
        (packb([Request.TAG, 1, [Requeue.TAG, ["b"], None, None, 0, None]]), "array of bytes"),
        (packb([Request.TAG, 1, [DeadLetter.TAG, b"b", "r", 1, None, None, None, None]]), "nil"),
        (encode(Refused(1, "no")), "unknown kind 7 on a container pipe where an event belongs"),
    ],
)
def test_an_event_that_is_not_one_is_refused_with_what_is_wrong(
    data: bytes, complaint: str
) -> None:
    with pytest.raises(EngineError, match="container pipe") as refused:
        decode_event(data)
    assert complaint in str(refused.value)


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ([Answered.TAG, 1, [AskVerdict.TAG, "m"]], "where a response belongs"),
        ([Answered.TAG, "1", [Done.TAG]], "not an int"),
        ([Refused.TAG, 1], "it ends where a str"),
        ([Ready.TAG], "where a reply belongs"),
    ],
)
def test_a_reply_that_is_not_one_is_refused_with_what_is_wrong(
    message: list[Any], complaint: str
) -> None:
    with pytest.raises(EngineError, match=complaint):
        decode_reply(packb(message))


async def test_a_container_request_gets_the_engines_typed_answer_or_its_refusal() -> None:
    # Given a container's link and the engine's ends of its two pipes
    status_reader, status_writer = multiprocessing.Pipe(duplex=False)
    replies_reader, replies_writer = multiprocessing.Pipe(duplex=False)
    link = EngineLink(status_writer, replies_reader)
    link.attach(asyncio.get_running_loop())
    engine = PipeReader(status_reader)

    async def next_request() -> Request:
        while True:
            messages, _ = engine.read()
            if messages:
                (data,) = messages
                request = decode_event(data)
                assert isinstance(request, Request)
                return request
            await asyncio.sleep(0.001)

    # When the engine answers a verdict, and refuses a requeue
    asked = asyncio.ensure_future(link.request(AskVerdict("m")))
    request = await next_request()
    assert request.query == AskVerdict("m")
    replies_writer.send_bytes(encode(Answered(request.id, Verdict("replaced"))))
    # Then the container gets the verdict, and the refusal as an EngineError
    assert await asyncio.wait_for(asked, 5) == Verdict("replaced")
    requeued = asyncio.ensure_future(link.request(Requeue((b"x",), None, None)))
    request = await next_request()
    replies_writer.send_bytes(encode(Refused(request.id, "ConnectionError: away")))
    with pytest.raises(EngineError, match="ConnectionError: away"):
        await asyncio.wait_for(requeued, 5)
    # And an answer of the wrong kind is an error, not a surprise later
    dead = asyncio.ensure_future(link.request(DeadLetter(b"x", "bad")))
    request = await next_request()
    replies_writer.send_bytes(encode(Answered(request.id, Verdict("healthy"))))
    with pytest.raises(EngineError, match="answered DeadLetter with Verdict, not Done"):
        await asyncio.wait_for(dead, 5)
    # And a pending request fails at once when the engine goes
    orphan = asyncio.ensure_future(link.request(AskVerdict("n")))
    await next_request()
    replies_writer.close()
    with pytest.raises(EngineError, match="the engine is gone"):
        await asyncio.wait_for(orphan, 5)
    asyncio.get_running_loop().remove_reader(replies_reader.fileno())
    engine.close()
    status_writer.close()
    replies_reader.close()


def test_the_pool_has_a_handler_for_every_event_and_every_query() -> None:
    async def never(*_: Any) -> int:
        raise AssertionError("not called")

    pool = ContainerPool(
        FunctionConfig(
            "amqp://",
            "env",
            "app",
            "queue",
            FunctionSpec("f", False),
            "/code",
            Settings.from_environment({}),
        ),
        Autoscaling(),
        CancelMemory(),
        never,
        never,
        Republisher(None, "env", "classic"),  # type: ignore[arg-type]
    )
    assert set(pool._on_event) == set(get_args(Event))
    assert set(pool._serve) == set(get_args(Query))


def test_a_container_config_survives_the_fork_servers_pickling() -> None:
    function = FunctionConfig(
        broker_url="amqp://guest:guest@127.0.0.1:5672/",
        environment="env",
        instance="app-1",
        queue="warren.env.app.f",
        spec=FunctionSpec("f", True, max_inputs=4),
        code_path="/code/app.pkl",
        settings=Settings.from_environment({}),
        sys_path=("/src",),
    )
    config = ContainerConfig(
        function,
        container_id="abc123",
        cancelled=("i1", "i2"),
        environ={"TOKEN": "secret", "UNSET": None},
        volumes={"/data": ("volume", "/var/lib/warren/volume")},
        core=1,
    )
    assert pickle.loads(pickle.dumps(config)) == config
