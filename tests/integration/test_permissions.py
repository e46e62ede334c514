"""The least-privilege users of broker_config/definitions.json, on the real broker.

Users with exactly the permissions the file grants (under test names, removed after)
run a real engine, its containers and a client: calls, retries and results work, what a
function prints reaches the caller through the log stream, a caller cannot read a
function queue, and a container cannot publish a call.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
import warren
from aiormq.exceptions import ChannelAccessRefused
from faults import rabbitmqctl
from support import REPO, EngineProcess, engine_running, forget_environment
from warren.client.log_reader import LogReader
from warren.wire.logs import LogBatch

ENVIRONMENT = f"test-perms-{uuid.uuid4().hex[:8]}"
ROLES = ("engine", "container", "client")
app = warren.App("test-permissions", environment=ENVIRONMENT)


@app.function()
def double(x: int) -> int:
    return 2 * x


@app.function(retries=warren.Retries(1, initial_delay=0.1))
def fails_once(marker: str) -> str:
    if not Path(marker).exists():
        Path(marker).touch()
        raise RuntimeError("first attempt")
    return "second attempt"


@app.function()
def say(token: str) -> None:
    print(f"said {token}")


@pytest.fixture
def broker_users() -> Iterator[dict[str, str]]:
    """A broker user per role, with that role's permissions on vhost / from the file."""
    definitions = json.loads((REPO / "broker_config" / "definitions.json").read_text())
    suffix = uuid.uuid4().hex[:8]
    urls: dict[str, str] = {}
    created: list[str] = []
    try:
        for role in ROLES:
            (grant,) = [
                p
                for p in definitions["permissions"]
                if p["user"] == f"warren-{role}" and p["vhost"] == "/"
            ]
            user, password = f"warren-{role}-test-{suffix}", uuid.uuid4().hex
            rabbitmqctl("add_user", user, password)
            created.append(user)
            rabbitmqctl(
                "set_permissions",
                "-p",
                "/",
                user,
                grant["configure"],
                grant["write"],
                grant["read"],
            )
            urls[role] = f"amqp://{user}:{password}@127.0.0.1:5672/"
        yield urls
    finally:
        for user in created:
            rabbitmqctl("delete_user", user)


@pytest.fixture
def engine_with_its_own_users(
    broker_users: dict[str, str], tmp_path: Path
) -> Iterator[EngineProcess]:
    env = {
        "WARREN_BROKER_URL": broker_users["engine"],
        "WARREN_CONTAINER_BROKER_URL": broker_users["container"],
    }
    try:
        with engine_running(tmp_path / "state", env) as daemon:
            yield daemon
    finally:
        forget_environment(ENVIRONMENT)


async def refused(url: str, action: str, queue: str) -> bool:
    """Whether the broker refuses ``action`` ("get" or "publish") on ``queue`` for that user."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        try:
            if action == "get":
                declared = await channel.declare_queue(queue, passive=True)
                await declared.get(fail=False)
            else:
                await channel.default_exchange.publish(
                    aio_pika.Message(b"a forged call"), routing_key=queue
                )
        except ChannelAccessRefused:
            return True
        return False
    finally:
        await connection.close()


async def test_engine_containers_and_callers_work_with_least_privilege(
    broker_users: dict[str, str], engine_with_its_own_users: EngineProcess, tmp_path: Path
) -> None:
    async with (
        warren.Client.connect(broker_users["client"], environment=ENVIRONMENT) as client,
        app.run(),
    ):
        # Calls, results, retries (the engine requeues for its containers) all work
        assert await double.remote.aio(21) == 42
        assert await fails_once.remote.aio(str(tmp_path / "marker")) == "second attempt"
        # A container publishes what its function prints, and the caller reads it
        batches: list[LogBatch] = []
        reader = LogReader(batches.append, app=app.instance_name)
        await reader.start(client.session, ENVIRONMENT)
        token = uuid.uuid4().hex
        await say.remote.aio(token)
        for _ in range(50):
            if any(line.text == f"said {token}" for batch in batches for line in batch.lines):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the printed line never reached the caller")
        await reader.close()
        queue = double.target().queue
        # A caller cannot read the messages of a function queue
        assert await refused(broker_users["client"], "get", queue)
        # A container cannot publish a call
        assert await refused(broker_users["container"], "publish", queue)
        # (the engine itself can: the check is not vacuous)
        assert not await refused(broker_users["engine"], "get", queue)
