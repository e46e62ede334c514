"""Warren's lean AMQP driver, its reconnecting session and the restart marker, against
the real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from faults import rabbitmqctl
from warren.client.restart_watch import RestartWatch
from warren.config import settings
from warren.wire import naming
from warren.wire.amqp import Connection, ConnectionLost, Delivery, NotFound, Properties, Returned
from warren.wire.session import BrokerSession, temporary_channel


def _name(kind: str) -> str:
    return f"test-amqp-{kind}-{uuid.uuid4().hex[:8]}"


async def test_a_large_message_goes_round_through_a_queue_confirmed_and_acknowledged() -> None:
    connection = await Connection.open(settings().broker_url, _name("conn"))
    try:
        channel = await connection.channel(confirm=True)
        queue = _name("queue")
        await channel.declare_queue(queue, auto_delete=True)
        body = bytes(range(256)) * 4096  # 1 MiB: many body frames each way
        got: asyncio.Queue[Delivery] = asyncio.Queue()
        await channel.consume(queue, got.put_nowait)
        confirm = channel.publish(
            body, routing_key=queue, properties=Properties(correlation_id="c1")
        )
        assert confirm is not None
        await confirm
        delivery = await asyncio.wait_for(got.get(), 10)
        assert (delivery.body, delivery.correlation_id) == (body, "c1")
        delivery.channel.ack(delivery.delivery_tag)
        declared = await channel.declare_queue(queue, passive=True)
        assert declared is not None and declared.message_count == 0
    finally:
        await connection.close()


async def test_a_publish_nobody_takes_is_returned_and_a_missing_queue_closes_one_channel() -> None:
    connection = await Connection.open(settings().broker_url, _name("conn"))
    try:
        channel = await connection.channel(confirm=True)
        confirm = channel.publish(
            b"x",
            routing_key=_name("nowhere"),
            properties=Properties(message_id=uuid.uuid4().hex),
            mandatory=True,
        )
        assert confirm is not None
        with pytest.raises(Returned, match="NO_ROUTE"):
            await confirm
        probe = await connection.channel()
        with pytest.raises(NotFound):
            await probe.declare_queue(_name("missing"), passive=True)
        assert probe.closed.done()
        # Then the other channel, and the connection, are as they were
        queue = _name("queue")
        await channel.declare_queue(queue, auto_delete=True)
        assert await channel.get(queue) is None
        assert connection.is_open
    finally:
        await connection.close()


async def test_get_takes_one_message_or_says_there_is_none() -> None:
    connection = await Connection.open(settings().broker_url, _name("conn"))
    try:
        channel = await connection.channel(confirm=True)
        queue = _name("queue")
        await channel.declare_queue(queue, auto_delete=True)
        assert await channel.get(queue) is None
        confirm = channel.publish(b"one", routing_key=queue)
        assert confirm is not None
        await confirm
        got = await channel.get(queue, no_ack=True)
        assert got is not None and got.body == b"one"
        assert await channel.get(queue) is None
    finally:
        await connection.close()


async def test_a_session_comes_back_after_the_broker_closes_its_connection() -> None:
    name = _name("session")
    setups: list[bool] = []
    lost = asyncio.Event()

    async def setup(connection: Connection, first: bool) -> None:
        setups.append(first)

    session = BrokerSession(settings().broker_url, name, setup)
    await session.start()
    session.lost_callbacks.append(lost.set)
    try:
        first = session.connection
        await asyncio.to_thread(_close_connection, name)
        await asyncio.wait_for(lost.wait(), 10)
        again = await asyncio.wait_for(session.ready(), 10)
        # Then it is a new connection, set up again (not for the first time)
        assert again is not first and again.is_open
        assert setups == [True, False]
        with pytest.raises(ConnectionLost):
            await first.channel()
    finally:
        await session.close()


def _close_connection(name: str) -> None:
    listed = rabbitmqctl("list_connections", "pid", "client_properties", "-q")
    for line in listed.splitlines():
        if f'"connection_name","{name}"' in line:
            rabbitmqctl("close_connection", line.split()[0], "test")


async def test_the_marker_tells_a_broker_that_lost_its_transient_messages() -> None:
    # Given a client's marker left in its queue
    queue = naming.marker_queue("test-amqp", uuid.uuid4().hex[:20])

    async def setup(connection: Connection, first: bool) -> None:
        pass

    session = BrokerSession(settings().broker_url, _name("marker"), setup)
    await session.start()
    watch = RestartWatch(session, queue, expiry=60)
    try:
        connection = session.connection
        await watch.mark(connection)
        # When the connection comes back and the marker is still there: no restart
        assert not await watch.lost(connection)
        # When the marker is gone, as after a broker restart: a restart, and a new marker
        async with temporary_channel(connection) as channel:
            await channel.purge_queue(queue)
        assert await watch.lost(connection)
        assert not await watch.lost(connection)
    finally:
        await watch.close()
        async with temporary_channel(session.connection) as channel:
            await channel.delete_queue(queue)
        await session.close()
