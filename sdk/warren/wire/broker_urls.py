"""Broker URLs that list several RabbitMQ nodes of one cluster, comma-separated.

``WARREN_BROKER_URL=amqp://u:p@rabbit-1/,amqp://u:p@rabbit-2/,amqp://u:p@rabbit-3/``
names the nodes a client, an engine or a container may connect to. A connection tries
them in turn, starting from the node that worked last and moving on when one fails,
both at the first connect and at every reconnect; so when a node dies, whoever was
connected to it comes back through another node::

    nodes = BrokerUrls.parse("amqp://guest:guest@a/,amqp://guest:guest@b/")
    connection = await open_connection(nodes, "client-1")  # Warren's own AMQP client
    robust = await connect_robust(nodes.raw, client_properties={...})  # aio-pika
    plain = await connect(nodes.raw)  # aio-pika, no reconnecting (tools, tests)

The list is parsed and checked by :mod:`warren.config` (``split_urls``, ``validated_urls``,
``redacted_url``, which masks every entry's password); this module connects over it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aio_pika
import structlog
from aio_pika import RobustConnection
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aio_pika.connection import make_url
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPConnectionError
from yarl import URL

from warren.config import redacted_one, redacted_url, validated_urls
from warren.wire.amqp import HEARTBEAT_SECONDS, BrokerError, Connection, ConnectionLost

log = structlog.get_logger(__name__)


class BrokerUrls:
    """The nodes one connection may use, and which of them worked last."""

    def __init__(self, urls: list[str]) -> None:
        if not urls:
            raise ValueError("no broker URL")
        self.urls = urls
        self._last = 0

    @classmethod
    def parse(cls, raw: str) -> BrokerUrls:
        return cls(validated_urls("the broker URL", raw))

    @property
    def raw(self) -> str:
        return ",".join(self.urls)

    def __repr__(self) -> str:
        return f"BrokerUrls({redacted_url(self.raw)!r})"

    def in_turn(self) -> Iterator[str]:
        """Every URL once, the one that worked last first."""
        count = len(self.urls)
        for step in range(count):
            yield self.urls[(self._last + step) % count]

    def worked(self, url: str) -> None:
        self._last = self.urls.index(url)

    def pass_over(self) -> None:
        """The node that worked last took a connection but could not serve it: the next
        attempt starts after it."""
        self._last = (self._last + 1) % len(self.urls)


async def open_connection(
    nodes: BrokerUrls, name: str, *, heartbeat: int = HEARTBEAT_SECONDS
) -> Connection:
    """A Warren AMQP connection to the first node of ``nodes`` (in turn) that answers."""
    failures: list[str] = []
    for url in nodes.in_turn():
        try:
            connection = await Connection.open(url, name, heartbeat=heartbeat)
        except (BrokerError, OSError, TimeoutError) as exc:
            if len(nodes.urls) == 1:
                raise
            failures.append(f"{redacted_one(url)}: {type(exc).__name__}: {exc}")
            log.info("broker_node_unreachable", url=redacted_one(url), reason=str(exc))
            continue
        nodes.worked(url)
        return connection
    raise ConnectionLost("no broker node answered (" + "; ".join(failures) + ")")


class ClusterRobustConnection(RobustConnection):
    """aio-pika's reconnecting connection, over every node of a URL list.

    Each connect attempt (the first and every recovery) tries the nodes in turn from
    the one that worked last; the attempt fails only when none answers, and then
    aio-pika waits ``reconnect_interval`` and tries again. Channels, queues and
    consumers are restored by aio-pika as for a single node.
    """

    def __init__(self, url: URL, nodes: BrokerUrls, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.nodes = nodes
        # What aio-pika's connect_robust puts in the URL's query (heartbeat, timeouts):
        # aiormq reads them there, so each node's URL carries them too.
        self._options = kwargs

    def __str__(self) -> str:
        return redacted_url(self.nodes.raw)

    # aio-pika's connect step (name-mangled in RobustConnection): one connect attempt,
    # called by its recovery loop.
    async def _RobustConnection__connect_transport(self) -> None:
        failures: list[tuple[str, BaseException]] = []
        for url in self.nodes.in_turn():
            self.url = make_url(url, **dict(self._options))
            try:
                await super()._RobustConnection__connect_transport()  # type: ignore[misc]
            except CONNECTION_EXCEPTIONS as exc:
                failures.append((url, exc))
                log.info("broker_node_unreachable", url=redacted_one(url), reason=repr(exc))
                continue
            self.nodes.worked(url)
            return
        if len(failures) == 1:
            raise failures[0][1]
        raise _no_node_answered(failures) from failures[-1][1]


async def connect(raw: str, **kwargs: Any) -> AbstractConnection:
    """``aio_pika.connect`` (no reconnecting) to the first node of a URL list that answers."""
    nodes = BrokerUrls.parse(raw)
    failures: list[tuple[str, BaseException]] = []
    for url in nodes.in_turn():
        try:
            connection: AbstractConnection = await aio_pika.connect(url, **kwargs)
        except CONNECTION_EXCEPTIONS as exc:
            if len(nodes.urls) == 1:
                raise
            failures.append((url, exc))
            continue
        nodes.worked(url)
        return connection
    raise _no_node_answered(failures) from failures[-1][1]


def _no_node_answered(failures: list[tuple[str, BaseException]]) -> AMQPConnectionError:
    reasons = "; ".join(
        f"{redacted_one(url)}: {type(exc).__name__}: {exc}" for url, exc in failures
    )
    return AMQPConnectionError(f"no broker node answered ({reasons})")


async def connect_robust(raw: str, **kwargs: Any) -> AbstractRobustConnection:
    """``aio_pika.connect_robust`` over every node of a comma-separated URL list."""
    nodes = BrokerUrls.parse(raw)
    timeout = kwargs.pop("timeout", None)
    first = make_url(nodes.urls[0], **dict(kwargs))
    connection = ClusterRobustConnection(first, nodes, **kwargs)
    await connection.connect(timeout=timeout)
    return connection
