"""Signed messages and size limits against the real broker.

A message that is not signed with the shared key (garbage, a bare pickle, a tampered
or foreign signature, an expired or oversized one) must never be unpickled or run:
it lands in the dead-letter queue with the reason, and the next valid call works.
"""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import warren
from faults import dead_letters
from support import lines, queue_depth, running_in_own_environment, wait_until
from warren.config import settings
from warren.wire import broker_urls, naming, topology
from warren.wire.codec import FORMAT_PICKLE, Envelope
from warren.wire.protocol import CallBatch
from warren.wire.signing import Signer, load_key, signer

ENVIRONMENT = f"test-security-{uuid.uuid4().hex[:8]}"
REPLY_TO = "nobody"
app = warren.App("test-security", environment=ENVIRONMENT)


@app.function()
def echo(log: str, value: Any) -> Any:
    with open(log, "a") as handle:
        handle.write("ran\n")
    return value


@app.function()
def returns_a_lot(megabytes: int) -> bytes:
    return b"x" * (megabytes * 1024 * 1024)


class OpensTheSentinel:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module", autouse=True)
def running(broker_url: str) -> Iterator[warren.App]:
    with running_in_own_environment(app, ENVIRONMENT):
        yield app


def function_queue() -> str:
    return echo.target().queue


def publish_raw(bodies: list[bytes]) -> None:
    async def publish() -> None:
        connection = await broker_urls.connect(settings().broker_url)
        try:
            channel = await connection.channel()
            for body in bodies:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, message_id=uuid.uuid4().hex, reply_to=REPLY_TO),
                    routing_key=function_queue(),
                )
        finally:
            await connection.close()

    asyncio.run(publish())


def forged_messages(sentinel: Path) -> dict[str, bytes]:
    """Each kind of message a container must refuse, all carrying the sentinel pickle."""
    payload = pickle.dumps([[OpensTheSentinel(sentinel)], {}])
    batch = CallBatch("forged", [(0, FORMAT_PICKLE, payload)]).to_envelope()
    ours = signer()
    sealed = ours.seal(batch, reply_to=REPLY_TO)
    tampered = bytearray(sealed)
    tampered[-5] ^= 0xFF  # inside the body, after the signature
    return {
        "malformed": b"\x00\x01 garbage, not msgpack",
        "not signed": batch.pack(),
        "signature does not match": bytes(tampered),
        "signed with key": Signer(b"not-our-key-" * 3, ours.max_size, 60).seal(batch),
        "expired": Signer(load_key(), ours.max_size, -120).seal(batch, reply_to=REPLY_TO),
        "exceeds the limit": Envelope("calls", b"x" * (3 * 1024 * 1024)).pack(),
    }


def test_forged_messages_are_dead_lettered_with_a_reason_and_never_run(tmp_path: Path) -> None:
    # Given hand-made messages on a function queue, each carrying a pickle that would
    # create a sentinel file if it were ever loaded
    sentinel = tmp_path / "sentinel"
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(OpensTheSentinel(proof))).close()
    assert proof.exists()  # the payload is live: loading it would create the sentinel
    forged = forged_messages(sentinel)
    publish_raw(list(forged.values()))
    # Then each lands in the dead-letter queue with the reason it was refused
    dead: list[dict[str, Any]] = []
    assert wait_until(lambda: bool(dead.extend(dead_letters(ENVIRONMENT))) or len(dead) >= 6, 30)
    reasons = sorted(d["headers"][topology.REASON_HEADER] for d in dead)
    for expected in forged:
        assert any(expected in reason for reason in reasons), (expected, reasons)
    assert all(d["headers"]["x-warren-queue"] == function_queue() for d in dead)
    # And no code from them ran, and the function queue is empty
    assert not sentinel.exists()
    assert queue_depth(function_queue()) == 0
    # And the next valid call succeeds
    log = tmp_path / "executions"
    assert echo.remote(str(log), "still fine") == "still fine"
    assert lines(log) == ["ran"]


def test_an_argument_too_large_for_a_message_raises_before_anything_is_published(
    tmp_path: Path,
) -> None:
    log = tmp_path / "executions"
    big = b"x" * (20 * 1024 * 1024)
    started = time.monotonic()
    with pytest.raises(warren.MessageTooLargeError, match=r"20\.0 MiB.*WARREN_MAX_MESSAGE_SIZE"):
        echo.remote(str(log), big)
    with pytest.raises(warren.MessageTooLargeError):
        echo.spawn(str(log), big)
    with pytest.raises(warren.MessageTooLargeError):
        list(echo.map([str(log)] * 2, [big, "small"]))
    assert time.monotonic() - started < 10
    assert queue_depth(function_queue()) == 0
    time.sleep(0.5)
    assert lines(log) == []  # nothing ran: nothing was published


def test_a_result_too_large_for_a_message_is_a_clear_error() -> None:
    with pytest.raises(warren.MessageTooLargeError, match="result of returns_a_lot"):
        returns_a_lot.remote(3)
    assert len(returns_a_lot.remote(1)) == 1024 * 1024


def test_many_values_near_the_limit_travel_in_messages_within_it(tmp_path: Path) -> None:
    log = tmp_path / "executions"
    values = [bytes([i]) * (900 * 1024) for i in range(6)]  # 5.4 MiB in all
    assert list(echo.map([str(log)] * 6, values)) == values


async def test_a_forged_result_is_dropped_by_the_client() -> None:
    async with warren.Client.connect(environment=ENVIRONMENT) as client:
        connection = await broker_urls.connect(settings().broker_url)
        try:
            channel = await connection.channel()
            exchange = await channel.get_exchange(naming.replies_exchange())
            await exchange.publish(
                aio_pika.Message(Envelope("results", b"\x92\x02\x90").pack()),
                routing_key=client.result_queue,
            )
        finally:
            await connection.close()
        for _ in range(100):
            if client.messages_rejected:
                break
            await asyncio.sleep(0.05)
        assert client.messages_rejected == 1
