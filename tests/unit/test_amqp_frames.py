"""The lean AMQP driver's framing, without a broker: frames in pieces, content split
over body frames, confirms and returns matched to their publishes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pamqp import commands as spec
from pamqp import frame as codec
from pamqp import header as content
from pamqp.body import ContentBody
from warren.wire.amqp import (
    Address,
    Channel,
    Connection,
    ConnectionLost,
    Delivery,
    NotFound,
    Properties,
    Returned,
)


class Wire:
    """A transport that keeps what the driver writes."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def frames(self) -> list[tuple[int, Any]]:
        found, data = [], bytes(self.written)
        while data:
            used, channel, value = codec.unmarshal(data)
            found.append((channel, value))
            data = data[used:]
        self.written.clear()
        return found


def _open_connection(frame_max: int = 4096) -> tuple[Connection, Wire]:
    connection = Connection(Address.parse("amqp://u:p%40ss@host:5673/v%2Fh"), "test")
    wire = Wire()
    connection.connection_made(wire)  # type: ignore[arg-type]
    assert bytes(wire.written).startswith(b"AMQP")
    wire.written.clear()
    connection.data_received(
        codec.marshal(spec.Connection.Start(), 0)
        + codec.marshal(spec.Connection.Tune(channel_max=10, frame_max=frame_max, heartbeat=0), 0)
        + codec.marshal(spec.Connection.OpenOk(), 0)
    )
    sent = [value for _, value in wire.frames()]
    assert isinstance(sent[0], spec.Connection.StartOk)
    assert sent[0].response == "\0u\0p@ss"
    assert isinstance(sent[-1], spec.Connection.Open) and sent[-1].virtual_host == "v/h"
    assert connection.is_open
    return connection, wire


async def _channel(connection: Connection, wire: Wire) -> Channel:
    opening = asyncio.ensure_future(connection.channel(confirm=True))
    await asyncio.sleep(0)
    connection.flush()
    connection.data_received(codec.marshal(spec.Channel.OpenOk(), 1))
    await asyncio.sleep(0)
    connection.data_received(codec.marshal(spec.Confirm.SelectOk(), 1))
    channel = await opening
    wire.frames()
    return channel


def test_urls_give_the_address_with_defaults() -> None:
    assert Address.parse("amqp://h") == Address("h", 5672, "guest", "guest", "/", False)
    tls = Address.parse("amqps://a:b@h/prod")
    assert (tls.port, tls.tls, tls.vhost) == (5671, True, "prod")
    with pytest.raises(ValueError, match="not an AMQP URL"):
        Address.parse("http://h")


async def test_a_delivery_arriving_byte_by_byte_and_over_several_body_frames_is_whole() -> None:
    connection, wire = _open_connection(frame_max=64)
    channel = await _channel(connection, wire)
    got: list[Delivery] = []
    consuming = asyncio.ensure_future(channel.consume("q", got.append))
    await asyncio.sleep(0)
    connection.flush()
    ((_, consume),) = wire.frames()
    body = bytes(range(256)) * 2
    stream = codec.marshal(spec.Basic.ConsumeOk(consumer_tag=consume.consumer_tag), 1)
    stream += codec.marshal(
        spec.Basic.Deliver(consumer_tag=consume.consumer_tag, delivery_tag=7, routing_key="q"), 1
    )
    stream += codec.marshal(
        content.ContentHeader(0, len(body), spec.Basic.Properties(correlation_id="c")), 1
    )
    for start in range(0, len(body), 56):
        stream += codec.marshal(ContentBody(body[start : start + 56]), 1)
    for i in range(len(stream)):  # the broker's bytes, one at a time
        connection.data_received(stream[i : i + 1])
    assert await consuming == consume.consumer_tag
    assert len(got) == 1
    assert (got[0].body, got[0].delivery_tag, got[0].correlation_id) == (body, 7, "c")


async def test_publishing_splits_a_large_body_and_confirms_match_their_publishes() -> None:
    connection, wire = _open_connection(frame_max=64)
    channel = await _channel(connection, wire)
    first = channel.publish(b"x" * 200, routing_key="q")
    second = channel.publish(
        b"y", routing_key="q", mandatory=True, properties=Properties(message_id="m2")
    )
    third = channel.publish(b"z", routing_key="q")
    connection.flush()
    frames = wire.frames()
    bodies = [value for _, value in frames if type(value).__name__ == "ContentBody"]
    assert b"".join(b.value for b in bodies[:-2]) == b"x" * 200 and len(bodies) > 3
    assert first and second and third
    # the second had no route: its return comes before its confirm
    connection.data_received(
        codec.marshal(spec.Basic.Return(reply_code=312, reply_text="NO_ROUTE", routing_key="q"), 1)
        + codec.marshal(content.ContentHeader(0, 1, spec.Basic.Properties(message_id="m2")), 1)
        + codec.marshal(ContentBody(b"y"), 1)
        + codec.marshal(spec.Basic.Ack(delivery_tag=3, multiple=True), 1)
    )
    await first
    await third
    with pytest.raises(Returned, match="NO_ROUTE"):
        await second


async def test_a_channel_closed_by_the_broker_fails_what_waits_on_it_and_spares_others() -> None:
    connection, wire = _open_connection()
    channel = await _channel(connection, wire)
    declaring = asyncio.ensure_future(channel.declare_queue("gone", passive=True))
    await asyncio.sleep(0)
    connection.data_received(
        codec.marshal(
            spec.Channel.Close(
                reply_code=404, reply_text="NOT_FOUND - no queue", class_id=50, method_id=10
            ),
            1,
        )
    )
    with pytest.raises(NotFound, match="404"):
        await declaring
    connection.flush()
    assert isinstance(wire.frames()[-1][1], spec.Channel.CloseOk)
    assert connection.is_open  # only the channel went
    connection.connection_lost(None)
    with pytest.raises(ConnectionLost):
        await connection.channel()


async def test_a_corrupt_stream_closes_the_connection() -> None:
    connection, wire = _open_connection()
    connection.data_received(b"\x01\x00\x00\x00\x00\x00\x01\x00\x00")  # no frame end
    assert wire.closed and connection.closed.done()


PROPERTY_SETS = [
    {},
    {"correlation_id": "c", "reply_to": "warren.v1.main.results.x", "delivery_mode": 1},
    {"message_id": "a" * 32, "message_type": "calls", "delivery_mode": 2, "priority": 3},
    {"headers": {"x-warren-reason": "forged", "n": 7, "nested": {"ok": True}}},
    {
        "content_type": "application/json",
        "content_encoding": "utf-8",
        "expiration": "60000",
        "user_id": "guest",
        "app_id": "warren",
    },
    {"correlation_id": "é" * 100, "message_id": ""},
]


@pytest.mark.parametrize("values", PROPERTY_SETS)
def test_the_fast_codec_writes_what_pamqp_writes_and_reads_it_back(values: dict[str, Any]) -> None:
    from pamqp.body import ContentBody
    from warren.wire import frames

    body = b"b" * 300
    ours = frames.publish(7, "ex", "key", True, Properties(**values), body, frame_max=128)
    theirs = b"".join(
        [
            codec.marshal(spec.Basic.Publish(exchange="ex", routing_key="key", mandatory=True), 7),
            codec.marshal(content.ContentHeader(0, len(body), spec.Basic.Properties(**values)), 7),
            *(codec.marshal(ContentBody(body[i : i + 120]), 7) for i in range(0, len(body), 120)),
        ]
    )
    assert ours == theirs
    header = codec.marshal(content.ContentHeader(0, 5, spec.Basic.Properties(**values)), 7)
    class_id, size, decoded = frames.decode_header(header[7:-1])
    set_values = {name: value for name, value in values.items() if value}
    assert (class_id, size, decoded) == (60, 5, Properties(**set_values))


def test_deliver_and_ack_frames_decode_as_pamqp_encodes_them() -> None:
    from warren.wire import frames

    deliver = spec.Basic.Deliver(
        consumer_tag="ctag1.5", delivery_tag=2**40, redelivered=True, exchange="e", routing_key="q"
    )
    payload = codec.marshal(deliver, 3)[7:-1]
    assert frames.method_ids(payload) == (60, 60)
    assert frames.decode_deliver(payload) == frames.DeliverMethod("ctag1.5", 2**40, True, "e", "q")
    ack = codec.marshal(spec.Basic.Ack(delivery_tag=9, multiple=True), 3)
    assert frames.decode_ack(ack[7:-1]) == (9, True)
    assert frames.ack(3, 9, True) == ack
