"""Which engine nodes are up, what they offer and which pools they run: heartbeats.

Every node sends a :class:`NodeBeat` to the fanout exchange ``warren.v1.nodes`` each
``BEAT_SECONDS``, and reads everyone's through a queue of its own (exclusive: it goes
with the node's connection). A node is alive while its beats keep coming: one not
heard from for ``BEATS_MISSED`` beats (5 s) is taken for dead, and the pools it ran are
spread over the others (:mod:`warren_engine.pool.shares`). Beats carry what a node runs of each
pool (containers, inputs running and held, pids), so that any node can answer a
function's stats for the whole cluster, and which environments it leads.

A node alone (an engine of one ``app.run()``) has a membership of one: itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from warren import exceptions
from warren.wire import naming
from warren.wire.codec import Envelope, packb, unpackb
from warren.wire.control import NodeOffer, decode_fields, record_fields
from warren.wire.signing import Signer
from warren_engine.pool.presence import PoolBeat

log = structlog.get_logger(__name__)

BEAT_SECONDS = 1.0
BEATS_MISSED = 5  # a loaded machine may delay a beat or two: 5 s of silence is death
KIND_BEAT = "node_beat"
BEAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class NodeBeat:
    name: str
    environments: tuple[str, ...]
    offer: NodeOffer
    pools: tuple[PoolBeat, ...] = ()
    leads: tuple[str, ...] = ()  # the environments it leads
    started_at: float = 0.0


def encode_beat(beat: NodeBeat) -> Envelope:
    return Envelope(KIND_BEAT, packb([BEAT_VERSION, record_fields(beat)]))


def decode_beat(body: bytes) -> NodeBeat:
    try:
        version, fields = unpackb(body)
    except (ValueError, TypeError) as exc:
        raise exceptions.DeserializationError(f"malformed node beat: {exc}") from exc
    if version != BEAT_VERSION:
        raise exceptions.DeserializationError(f"node beat version {version!r} is not supported")
    return decode_fields(NodeBeat, fields, "node beat")


@dataclass(slots=True)
class Peer:
    beat: NodeBeat
    seen: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.seen < BEAT_SECONDS * BEATS_MISSED


class Membership:
    """This node's view of the nodes (itself included)."""

    def __init__(self, name: str, beat: Callable[[], NodeBeat]) -> None:
        self.name = name
        self._beat = beat
        self._peers: dict[str, Peer] = {}

    def own(self) -> NodeBeat:
        """This node's beat, as it is now."""
        return self._beat()

    # -- the view ------------------------------------------------------------------------

    def heard(self, beat: NodeBeat) -> None:
        if beat.name == self.name:
            return
        known = self._peers.get(beat.name)
        if known is None or not known.alive:
            log.info("node_joined", node=beat.name, environments=list(beat.environments))
        self._peers[beat.name] = Peer(beat)

    def others(self) -> list[NodeBeat]:
        """The live nodes other than this one, by name."""
        self._forget_dead()
        return [peer.beat for name, peer in sorted(self._peers.items()) if peer.alive]

    def nodes(self) -> list[NodeBeat]:
        """Every live node, this one included, by name."""
        return sorted([self.own(), *self.others()], key=lambda beat: beat.name)

    def leader(self, environment: str) -> str | None:
        leaders = [beat.name for beat in self.nodes() if environment in beat.leads]
        return leaders[0] if leaders else None

    def _forget_dead(self) -> None:
        for name, peer in list(self._peers.items()):
            if not peer.alive:
                log.warning("node_lost", node=name, silent_for=round(time.monotonic() - peer.seen))
                del self._peers[name]


class Heartbeats:
    """Sends this node's beats and hears the others' (owns its task and queue)."""

    def __init__(
        self, connection: AbstractRobustConnection, signer: Signer, membership: Membership
    ) -> None:
        self._connection = connection
        self._signer = signer
        self.membership = membership
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            naming.nodes_exchange(), aio_pika.ExchangeType.FANOUT, durable=True
        )
        queue = await channel.declare_queue(
            f"{naming.node_queue(self.membership.name)}.beats", exclusive=True
        )
        await queue.bind(exchange)
        await queue.consume(self._on_beat, no_ack=True)
        await self._send(exchange)  # the others learn of us at once
        self._task = asyncio.create_task(self._beat_forever(exchange))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _on_beat(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = self._signer.open_message(message, kind=KIND_BEAT)
            self.membership.heard(decode_beat(envelope.body))
        except exceptions.WarrenError as exc:
            log.warning("node_beat_rejected", reason=str(exc))

    async def _send(self, exchange: aio_pika.abc.AbstractExchange) -> None:
        body = self._signer.seal(encode_beat(self.membership.own()), valid_for=10.0)
        await exchange.publish(
            aio_pika.Message(body, type=KIND_BEAT, expiration=BEAT_SECONDS * BEATS_MISSED),
            routing_key="",
        )

    async def _beat_forever(self, exchange: aio_pika.abc.AbstractExchange) -> None:
        while True:
            await asyncio.sleep(BEAT_SECONDS)
            try:
                # Bounded: a publish begun on a connection that went silent may never end,
                # and a node that stopped beating would never rejoin its peers.
                async with asyncio.timeout(BEAT_SECONDS * BEATS_MISSED):
                    await self._send(exchange)
            except asyncio.CancelledError:
                # aiormq cancels the calls of a connection it found stuck: only our own
                # cancellation ends the beats.
                if _cancelling():
                    raise
                log.debug("node_beat_not_sent", reason="its connection was found stuck")
            except Exception as exc:  # the connection is coming back: beat again then
                log.debug("node_beat_not_sent", reason=str(exc))


def _cancelling() -> bool:
    """Whether the running task itself is being cancelled (not a call it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
