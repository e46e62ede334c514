"""Fault injection and the checker the fault tests share.

The checker proves the engine's promise for every call: at least one execution, and
exactly one outcome seen by the caller. Functions under test record each execution
as a line ``<call id> <pid>`` in a file (appends of one short line are atomic); the
test records each outcome it receives. Every injected fault is shown to have really
happened: a broker fault by the broker connections' new ``connected_at`` times, a
killed container by a new pid.
"""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
from support import wait_until

BROKER_PORT = 5672

# Functions under test call record_execution in containers, which cannot import this file.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def record_execution(path: str, call_id: object) -> None:
    """Called by a function under test: one line per execution."""
    with open(path, "a") as handle:
        handle.write(f"{call_id} {os.getpid()}\n")


@dataclass
class Checker:
    """Counts executions (from the functions' log) and outcomes (from the test) per call."""

    executions_file: Path
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)

    def outcome(self, call_id: object) -> None:
        self.outcomes[str(call_id)] += 1

    def executions(self) -> collections.Counter[str]:
        if not self.executions_file.exists():
            return collections.Counter()
        lines = self.executions_file.read_text().splitlines()
        return collections.Counter(line.split()[0] for line in lines if line)

    def pids(self, call_id: object) -> list[int]:
        lines = self.executions_file.read_text().splitlines()
        return [int(line.split()[1]) for line in lines if line.split()[0] == str(call_id)]

    def check(self, call_ids: list[object]) -> None:
        """Each call: exactly one outcome, at least one execution; nothing else seen."""
        executions = self.executions()
        expected = {str(c) for c in call_ids}
        duplicated = {c: n for c, n in self.outcomes.items() if n != 1}
        assert not duplicated, f"calls with more than one outcome: {sorted(duplicated)[:10]}"
        missing = expected - set(self.outcomes)
        assert not missing, f"{len(missing)} calls without an outcome: {sorted(missing)[:10]}"
        unexpected = set(self.outcomes) - expected
        assert not unexpected, f"outcomes of calls never made: {sorted(unexpected)[:10]}"
        never_ran = expected - set(executions)
        assert not never_ran, f"{len(never_ran)} calls never executed: {sorted(never_ran)[:10]}"


# -- the broker ----------------------------------------------------------------------------


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=True
    )
    return done.stdout


def broker_answers() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", BROKER_PORT), timeout=1).close()
    except OSError:
        return False
    return True


def connection_starts() -> dict[str, int]:
    """Each broker connection's name and when it was opened (ms since the epoch)."""
    listed = rabbitmqctl("list_connections", "client_properties", "connected_at", "-q")
    starts: dict[str, int] = {}
    for line in listed.splitlines():
        if "connection_name" not in line:
            continue
        name = line.split('"connection_name","', 1)[1].split('"', 1)[0]
        starts[name] = int(line.rsplit(None, 1)[-1])
    return starts


def reconnected_since(before: dict[str, int], prefix: str = "container-") -> list[str]:
    """Names of connections (matching ``prefix``) that were opened again after ``before``."""
    after = connection_starts()
    return [
        name
        for name, started in after.items()
        if name.startswith(prefix) and name in before and started > before[name]
    ]


def restart_broker(pause: float = 5.0) -> None:
    """``rabbitmqctl stop_app; sleep pause; rabbitmqctl start_app``; started again in any case."""
    try:
        rabbitmqctl("stop_app")
        time.sleep(pause)
    finally:
        rabbitmqctl("start_app")
        assert wait_until(broker_answers, 60, interval=0.5), "the broker did not come back"


def close_all_connections() -> None:
    rabbitmqctl("close_all_connections", "fault test")


def _broker_env(key: str) -> str:
    return rabbitmqctl("eval", f"application:get_env(rabbit, {key}).").strip()


# What an unset key means to the broker; channel_tick_interval must never be left unset
# (every new channel would fail).
_BROKER_DEFAULTS = {"channel_tick_interval": "60000"}


def _set_broker_env(key: str, previous: str) -> None:
    if previous.startswith("{ok,"):
        value = previous[len("{ok,") : -1]
    elif key in _BROKER_DEFAULTS:
        value = _BROKER_DEFAULTS[key]
    else:
        rabbitmqctl("eval", f"application:unset_env(rabbit, {key}).")
        return
    rabbitmqctl("eval", f"application:set_env(rabbit, {key}, {value}).")


@contextlib.contextmanager
def broker_consumer_timeout(milliseconds: int, tick_milliseconds: int = 1000) -> Iterator[None]:
    """The broker's node-wide consumer_timeout, lowered for the block, restored after.

    RabbitMQ checks it on each channel's tick (every 60 s by default), so the tick is
    shortened too. Both apply to channels opened inside the block.
    """
    previous = {key: _broker_env(key) for key in ("consumer_timeout", "channel_tick_interval")}
    rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {milliseconds}).")
    rabbitmqctl("eval", f"application:set_env(rabbit, channel_tick_interval, {tick_milliseconds}).")
    try:
        yield
    finally:
        for key, value in previous.items():
            _set_broker_env(key, value)


def dead_letters(environment: str) -> list[dict[str, Any]]:
    """Messages in an environment's dead-letter queue (taken off it), with their headers."""
    import asyncio

    from aio_pika.exceptions import ChannelNotFoundEntity
    from warren.config import settings
    from warren.wire import broker_urls, naming

    async def take() -> list[dict[str, Any]]:
        connection = await broker_urls.connect(settings().broker_url)
        try:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(
                    naming.dead_letter_queue(environment), passive=True
                )
            except ChannelNotFoundEntity:
                return []
            found = []
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                found.append({"body": message.body, "headers": dict(message.headers or {})})
            return found
        finally:
            await connection.close()

    return asyncio.run(take())
