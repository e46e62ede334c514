"""WARREN_QUEUE_TYPE=quorum: every queue that holds calls, results or state is a quorum
queue, and a queue that exists with the other type is a clear error (Step 11)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
import warren
from support import (
    delete_queues,
    forget_environment,
    running_in_own_environment,
    settings_afresh,
)
from warren.client.connection import Client
from warren.config import settings
from warren.wire import naming, topology

ENVIRONMENT = f"test-quorum-{uuid.uuid4().hex[:8]}"
app = warren.App("test-quorum", environment=ENVIRONMENT)
RETRY_DELAY = 0.2
MISMATCHED_ENVIRONMENT = f"test-quorum-{uuid.uuid4().hex[:8]}"
mismatched = warren.App("test-quorum-mismatch", environment=MISMATCHED_ENVIRONMENT)


@app.function()
def square(x: int) -> int:
    return x * x


@app.function(retries=warren.Retries(max_retries=1, initial_delay=RETRY_DELAY))
def fails_once(marker: str) -> str:
    if not Path(marker).exists():
        Path(marker).touch()
        raise RuntimeError("the first attempt fails")
    return "second attempt"


@mismatched.function()
def never_runs() -> None:
    pass


def queue_types(prefix: str) -> dict[str, str]:
    """The broker's queues whose names start with ``prefix``, and their types."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "type", "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rows = (line.split() for line in listed.stdout.splitlines())
    return {row[0]: row[1] for row in rows if len(row) == 2 and row[0].startswith(prefix)}


def queue_arguments(name: str) -> str:
    """A queue's arguments, as rabbitmqctl prints them (``[{"x-expires",60000},...]``)."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "arguments", "-q", "--no-table-headers"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    rows = (line.split("\t") for line in listed.stdout.splitlines())
    return next(row[1] for row in rows if len(row) == 2 and row[0] == name)


@pytest.fixture(scope="module")
def quorum() -> Iterator[None]:
    """This process (its clients) and the engine it starts declare quorum queues."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WARREN_QUEUE_TYPE", "quorum")
        settings_afresh(patch)
        yield


@pytest.fixture(scope="module")
def running(quorum: None, broker_url: str) -> Iterator[warren.App]:
    try:
        with running_in_own_environment(app, ENVIRONMENT):
            yield app
    finally:
        # Spawned calls' and delay queues would expire by themselves; a test leaves none.
        delete_queues(list(queue_types(f"{naming.PREFIX}.{ENVIRONMENT}.")))


@pytest.mark.timeout(300)
def test_remote_map_spawn_and_retries_run_on_quorum_queues(
    running: warren.App, tmp_path: Path
) -> None:
    # Given an app run with WARREN_QUEUE_TYPE=quorum
    # When it runs a call, a map of 1000, spawned calls fetched by id, and a retry
    assert square.remote(12) == 144
    assert list(square.map(range(1000))) == [x * x for x in range(1000)]
    calls = [square.spawn(x) for x in range(5)]
    ids = [call.object_id for call in calls]
    assert [warren.FunctionCall.from_id(i).get(timeout=60) for i in ids] == [0, 1, 4, 9, 16]
    assert fails_once.remote(str(tmp_path / "failed")) == "second attempt"
    # Then each function, call, delay, orphans and dead-letter queue is a quorum queue
    types = queue_types(f"{naming.PREFIX}.{ENVIRONMENT}.")
    function_queues = [name for name in types if naming.function_of_queue(name) is not None]
    assert len(function_queues) == 2
    call_queues = [name for name in types if naming.is_call_queue(name)]
    assert len(call_queues) == 5
    expected = [
        *function_queues,
        *call_queues,
        naming.delay_queue(ENVIRONMENT, int(RETRY_DELAY * 1000)),
        naming.orphans(ENVIRONMENT),
        naming.dead_letter_queue(ENVIRONMENT),
    ]
    assert {name: types.get(name) for name in expected} == dict.fromkeys(expected, "quorum")
    # And the broker gives up on a message only far beyond Warren's crash limit, into the
    # environment's dead letters, at least once
    arguments = queue_arguments(function_queues[0])
    assert f'{{"x-delivery-limit",{topology.DELIVERY_LIMIT}}}' in arguments
    assert '{"x-dead-letter-strategy","at-least-once"}' in arguments
    assert f'{{"x-dead-letter-routing-key","{naming.dead_letter_queue(ENVIRONMENT)}"}}' in arguments
    # And the log stream is a stream, as always
    assert types[naming.log_stream(ENVIRONMENT)] == "stream"


def test_a_quorum_client_s_result_queue_is_quorum_and_it_leaves_no_marker(quorum: None) -> None:
    async def declared() -> tuple[str, dict[str, str]]:
        async with Client.connect() as client:
            prefix = naming.result_queue(client.environment, client.client_id)
            return prefix, queue_types(prefix)

    result_queue, types = asyncio.run(declared())
    try:
        # Nothing it sends is transient, so no marker watches for a restart that lost
        # it (on a cluster, the loss of the marker's node would look like one)
        assert types == {result_queue: "quorum"}
    finally:
        delete_queues(list(types))


def test_a_classic_queue_met_with_quorum_is_a_clear_error_naming_both_types(
    quorum: None,
) -> None:
    environment = MISMATCHED_ENVIRONMENT

    async def make_classic_dead_letters() -> None:
        connection = await aio_pika.connect(settings().broker_url)
        try:
            await topology.declare_dead_letters(await connection.channel(), environment, "classic")
        finally:
            await connection.close()

    # Given an environment whose dead-letter queue exists as a classic queue
    asyncio.run(make_classic_dead_letters())
    queue = naming.dead_letter_queue(environment)
    try:
        # When an engine with WARREN_QUEUE_TYPE=quorum starts an app there
        with pytest.raises(warren.QueueMismatchError) as raised, mismatched.run():
            pass
        # Then the error names the queue, both types, and both ways out
        message = str(raised.value)
        assert f"{queue!r} exists as a classic queue" in message
        assert "declares it as a quorum queue" in message
        assert f"rabbitmqctl delete_queue {queue}" in message
        assert "WARREN_QUEUE_TYPE=classic again" in message
        # And the queue is untouched
        assert queue_types(queue) == {queue: "classic"}
    finally:
        forget_environment(environment)


def test_a_quorum_queue_met_with_classic_is_the_same_error_the_other_way(broker_url: str) -> None:
    environment = f"test-quorum-{uuid.uuid4().hex[:8]}"
    name = naming.function_queue(environment, "app", "f")

    async def declare_twice() -> None:
        connection = await aio_pika.connect(broker_url)
        try:
            channel = await connection.channel()
            await topology.declare_requeue(channel, environment, "quorum")
            await topology.declare_function_queue(channel, environment, name, "quorum")
            await topology.declare_function_queue(
                await connection.channel(), environment, name, "classic"
            )
        finally:
            async with connection.channel() as channel:
                await channel.queue_delete(name)
            await connection.close()

    try:
        with pytest.raises(warren.QueueMismatchError, match="exists as a quorum queue") as raised:
            asyncio.run(declare_twice())
        assert "WARREN_QUEUE_TYPE=quorum again" in str(raised.value)
    finally:
        forget_environment(environment)
