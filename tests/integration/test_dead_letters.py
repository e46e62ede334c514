"""``warren dead``: inputs dead-lettered by the crash limit, listed, retried after a fix,
and purged, through the command line and a real engine (Step 10)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import warren
from aio_pika.abc import HeadersType
from support import EngineProcess, engine_running, forget_environment, queue_depth
from warren.config import settings
from warren.wire import broker_urls, naming, topology
from warren_engine.daemon.dead_letters import MIN_ID_CHARS, dead_input_id
from warren_engine.publisher import SOURCE_QUEUE_HEADER

ENVIRONMENT = f"test-dead-{uuid.uuid4().hex[:8]}"
WARREN = str(Path(sys.executable).with_name("warren"))
CRASH_LIMIT = 2

broken = warren.App("test-dead-letters", environment=ENVIRONMENT)


@broken.function(name="settle")
def settle_broken(x: object) -> object:
    os._exit(3)  # the container dies each time, so the input reaches the crash limit


fixed = warren.App("test-dead-letters", environment=ENVIRONMENT)


@fixed.function(name="settle")
def settle_fixed(x: object) -> object:
    return ["settled", x]


@pytest.fixture
def spawned() -> Iterator[list[warren.FunctionCall[Any]]]:
    """Calls the test spawns; their result queues (kept a day) are removed after."""
    calls: list[warren.FunctionCall[Any]] = []
    yield calls

    async def remove() -> None:
        connection = await broker_urls.connect(settings().broker_url)
        try:
            for call in calls:
                async with connection.channel() as channel:
                    await channel.queue_delete(naming.call_queue(ENVIRONMENT, call_id(call)))
        finally:
            await connection.close()

    asyncio.run(remove())


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineProcess]:
    """An engine whose containers dead-letter an input after two crashes; the test's
    environment (its dead-letter queue) is removed after."""
    try:
        env = {"WARREN_CRASH_LIMIT": str(CRASH_LIMIT)}
        with engine_running(tmp_path / "state", env, log=tmp_path / "engine.log") as daemon:
            yield daemon
    finally:
        forget_environment(ENVIRONMENT)


def dead(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``warren dead ARGS --env <the test's>``; it must succeed unless ``ok`` is False."""
    done = subprocess.run(
        [WARREN, "dead", *args, "--env", ENVIRONMENT], capture_output=True, text=True, timeout=60
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def listed() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(dead("list", "--json").stdout)
    return result


def call_id(call: warren.FunctionCall[Any]) -> str:
    return call.object_id.split(".")[2]  # fc.<env>.<call id>.<spawned at>.<retention>


def test_an_input_dead_lettered_by_the_crash_limit_is_listed_retried_after_a_fix_and_purged(
    engine: EngineProcess, spawned: list[warren.FunctionCall[Any]]
) -> None:
    # Given a deployed function that kills its container, and two spawned calls of it
    # (the second's argument, a tuple, travels as a pickle)
    started = time.time()
    broken.deploy()
    settle = warren.Function.from_name("test-dead-letters", "settle", environment_name=ENVIRONMENT)
    first, second = settle.spawn(21), settle.spawn((1, 2))
    spawned += [first, second]
    # Each reaches the crash limit, and its caller is told so
    for call in (first, second):
        with pytest.raises(warren.DeadLetteredError, match="crash limit"):
            call.get(timeout=120)

    # When the dead-letter queue is listed, both are there, with their reason
    listing = listed()
    assert listing["total"] == 2
    entries = {entry["invocation"]: entry for entry in listing["inputs"]}
    one, two = entries[call_id(first)], entries[call_id(second)]
    assert (one["app"], one["function"]) == ("test-dead-letters", "settle")
    assert f"crash limit, WARREN_CRASH_LIMIT, is {CRASH_LIMIT}" in one["reason"]
    assert one["crashes"] == CRASH_LIMIT and one["verified"]
    assert started - 1 <= one["dead_at"] <= time.time() + 1
    table = dead("list").stdout
    assert one["id"] in table and two["id"] in table and "test-dead-letters.settle" in table
    # ...and listing took nothing off the queue
    assert queue_depth(naming.dead_letter_queue(ENVIRONMENT)) == 2

    # And show tells the plain argument, but not the pickled one
    shown = json.loads(dead("show", one["id"], "--json").stdout)
    assert [(a["format"], a["preview"]) for a in shown["arguments"]] == [("msgpack", "(21)")]
    assert shown["stored_result"] and shown["problem"] is None
    pickled = json.loads(dead("show", two["id"], "--json").stdout)["arguments"]
    assert [(a["format"], a["preview"]) for a in pickled] == [("pickle", None)]
    assert "not shown: loading a pickle runs code" in dead("show", two["id"]).stdout

    # When the function is fixed by a redeploy and the first input retried (by a prefix)
    fixed.deploy()
    retried = dead("retry", one["id"][:6]).stdout
    # Then it runs again, its spawned call gets the new result, and it left the queue
    queue = naming.function_queue(ENVIRONMENT, "test-dead-letters", "settle")
    assert f"retried {one['id']} on {queue}" in retried
    assert first.get(timeout=120) == ["settled", 21]
    assert [entry["id"] for entry in listed()["inputs"]] == [two["id"]]

    # When the app is gone, a retry says so and keeps the input
    stop = subprocess.run(
        [WARREN, "app", "stop", "test-dead-letters", "--env", ENVIRONMENT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stop.returncode == 0, stop.stderr
    refused = dead("retry", two["id"], ok=False)
    assert refused.returncode != 0
    assert "NotFoundError" in refused.stderr and "is not running" in refused.stderr
    unknown = dead("show", "abcdef123456", ok=False)
    assert unknown.returncode != 0 and "no dead input 'abcdef123456'" in unknown.stderr
    assert listed()["total"] == 1

    # And purge empties the queue, saying how many it removed
    assert "purged 1 dead-lettered inputs" in dead("purge", "--yes").stdout
    assert listed() == {"inputs": [], "total": 0}
    assert "no dead-lettered inputs" in dead("list").stdout


def forge_dead_letters(bodies: list[bytes], reason: str) -> None:
    """Put messages no engine signed in the test environment's dead-letter queue."""

    async def publish() -> None:
        connection = await broker_urls.connect(settings().broker_url)
        try:
            channel = await connection.channel()
            await topology.declare_dead_letters(channel, ENVIRONMENT)
            source = naming.function_queue(ENVIRONMENT, "test-dead-letters", "settle")
            headers: HeadersType = {topology.REASON_HEADER: reason, SOURCE_QUEUE_HEADER: source}
            for body in bodies:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, headers=headers),
                    routing_key=naming.dead_letter_queue(ENVIRONMENT),
                )
        finally:
            await connection.close()

    asyncio.run(publish())


def sharing_a_prefix() -> tuple[bytes, bytes]:
    """Two bodies whose ids start with the same shortest prefix a user may type."""
    seen: dict[str, bytes] = {}
    for n in range(1_000_000):
        body = f"forged {n}".encode()
        prefix = dead_input_id(body)[:MIN_ID_CHARS]
        if prefix in seen:
            return seen[prefix], body
        seen[prefix] = body
    raise AssertionError("no two ids share a prefix")


def test_messages_no_key_vouches_for_are_listed_and_shown_but_never_decoded_or_retried(
    engine: EngineProcess,
) -> None:
    # An environment with no dead-letter queue (yet) has nothing to list or purge
    assert listed() == {"inputs": [], "total": 0}
    assert "purged 0 dead-lettered inputs" in dead("purge", "--yes").stdout
    # Given dead letters this engine's key never signed: one twice, and two whose ids
    # share their first digits
    twins = sharing_a_prefix()
    forge_dead_letters([b"forged", b"forged", *twins], "rejected: the message is not signed")
    # When the queue is listed, identical messages are one input with two copies
    listing = listed()
    assert listing["total"] == 4
    by_id = {entry["id"]: entry for entry in listing["inputs"]}
    forged = by_id[dead_input_id(b"forged")]
    assert forged["copies"] == 2 and not forged["verified"] and forged["invocation"] is None
    assert forged["reason"] == "rejected: the message is not signed"
    # ...and a listing with a limit reads only so many messages, and says what it left
    limited = json.loads(dead("list", "--limit", "2", "--json").stdout)
    assert [(e["id"], e["copies"]) for e in limited["inputs"]] == [(forged["id"], 2)]
    assert limited["total"] == 4
    assert "... and 2 more messages (see --limit)" in dead("list", "--limit", "2").stdout
    # And show says why it is not decoded
    shown = json.loads(dead("show", forged["id"], "--json").stdout)
    assert shown["arguments"] == [] and shown["problem"].startswith("rejected: malformed")
    # Then a retry is refused with the reason, and a prefix naming two inputs is refused
    refused = dead("retry", forged["id"], ok=False)
    assert refused.returncode != 0 and "cannot be retried: rejected" in refused.stderr
    prefix = dead_input_id(twins[0])[:MIN_ID_CHARS]
    ambiguous = dead("show", prefix, ok=False)
    assert ambiguous.returncode != 0 and "names several dead inputs" in ambiguous.stderr
    # And nothing left the queue, in its order
    assert [entry["id"] for entry in listed()["inputs"]] == [
        entry["id"] for entry in listing["inputs"]
    ]
    assert listed()["total"] == 4
