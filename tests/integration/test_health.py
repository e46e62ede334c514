"""``GET /healthz`` of a real engine daemon follows its broker connection.

The engine reaches RabbitMQ through a TCP relay the test owns, so the test can take the
broker away from this engine alone (the shared broker keeps running) and give it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from support import EngineProcess, wait_until

pytestmark = pytest.mark.timeout(90)

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


class BrokerRelay:
    """A TCP relay to the broker, on a loop thread of its own, that can be cut and restored."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def open(self) -> None:
        self._run(self._open())

    def cut(self) -> int:
        """Stop listening and drop every link, both ways; how many connections were cut."""
        return self._run(self._cut())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        self._links |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    async def _cut(self) -> int:
        if self._server is not None:
            self._server.close()
            self._server = None
        cut = len(self._links) // 2
        for writer in self._links:
            writer.transport.abort()
        self._links.clear()
        return cut


def _health(port: int) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture
def relay(broker_url: str) -> Iterator[BrokerRelay]:
    relay = BrokerRelay(urlsplit(broker_url).port or 5672)
    relay.open()
    try:
        yield relay
    finally:
        relay.close()


def test_healthz_is_200_while_the_engine_has_its_broker_and_503_while_it_has_not(
    tmp_path: Path, broker_url: str, relay: BrokerRelay
) -> None:
    # Given an engine daemon that reaches the broker through the relay, with no token set
    parts = urlsplit(broker_url)
    user, at, _ = parts.netloc.rpartition("@")
    relayed = parts._replace(netloc=f"{user}{at}127.0.0.1:{relay.port}")
    http_port = _free_port()
    engine = EngineProcess(
        tmp_path / "state",
        env={"WARREN_BROKER_URL": relayed.geturl(), "WARREN_HTTP_PORT": str(http_port)},
    )
    engine.start()
    try:
        # Then it is healthy once started, and says nothing more than that
        assert _health(http_port) == (200, "ok\n")

        # When its broker goes away
        assert relay.cut() >= 1
        # Then it is unhealthy while it cannot reconnect
        assert wait_until(lambda: _health(http_port)[0] == 503, timeout=20)
        assert _health(http_port) == (503, "unavailable\n")

        # When the broker is back, then the engine reconnects and is healthy again
        relay.open()
        assert wait_until(lambda: _health(http_port)[0] == 200, timeout=30)
    finally:
        assert engine.stop() == 0
