"""A container's outgoing side: results, retries, and settling the messages they came in.

Outcomes pile up here while the loop is busy and go out together: results
signed and batched per caller through the replies exchange (transient for the calls
a waiting caller owns, persistent for a spawned call's stored result), with publisher
confirms; failed inputs with attempts left to the engine, which puts them in a delay
queue. A message is acknowledged only once everything its inputs produced is
confirmed, so a container that dies before that has the message redelivered; if any
of its inputs was abandoned (the container is stopping), it goes back to the queue
whole. A result the broker refuses (a negative confirm: its caller's quorum queue has
no leader for a moment, during a failover) is published again a little later
(:mod:`warren.wire.refusals`), its inputs held meanwhile: they do not run again for a
refusal. Only a lost connection, or refusals that last
:data:`REFUSALS_GIVEN_UP_AFTER`, put them back in their queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from warren.client.publisher import BROKER_ERRORS
from warren.exceptions import EngineError
from warren.wire.amqp import Channel, Nacked, Properties
from warren.wire.batching import ITEM_OVERHEAD, slices_within
from warren.wire.protocol import KIND_RESULTS, CallBatch, ResultBatch, ResultItem
from warren.wire.refusals import RefusalBackoff
from warren.wire.signing import ENVELOPE_OVERHEAD, Signer, result_validity
from warren.wire.spec import FunctionSpec

from warren_engine.container.inbound import Inbound
from warren_engine.pipe.messages import Requeue
from warren_engine.pipe.pipes import EngineLink

log = structlog.get_logger(__name__)

MAX_RESULTS_PER_MESSAGE = 1000
TRANSIENT = 1
PERSISTENT = 2
# How long results the broker keeps refusing are published again before their inputs go
# back to the queue (a quorum queue elects a leader in seconds; this is far past that).
REFUSALS_GIVEN_UP_AFTER = 60.0


class Outgoing:
    """A published results message, kept until confirmed so that a refusal can send it
    again as it was."""

    __slots__ = ("body", "channel", "confirm", "properties", "reply_to")

    def __init__(
        self,
        body: bytes,
        properties: Properties,
        reply_to: str,
        channel: Channel,
        confirm: asyncio.Future[None],
    ) -> None:
        self.body = body
        self.properties = properties
        self.reply_to = reply_to
        self.channel = channel  # the one it was published on
        self.confirm = confirm


class HeldMessage:
    """A message whose inputs are held; settled when the last of them is accounted for.

    ``slot`` is where the container's holding table records it (None if it does not);
    ``published`` when its caller published it, on this process's monotonic clock (0 if
    the message does not say, or is a redelivery).
    """

    __slots__ = ("abandoned", "batch", "expires_at", "message", "pending", "published", "slot")

    def __init__(
        self,
        message: Inbound,
        batch: CallBatch,
        pending: int,
        expires_at: int,
        slot: int | None = None,
        published: float = 0.0,
    ) -> None:
        self.message = message
        self.batch = batch
        self.pending = pending
        self.expires_at = expires_at  # what it is put back with keeps it
        self.slot = slot
        self.published = published
        self.abandoned = False


# A retry: the delivery it came in, and the input to run again.
Retry = tuple[HeldMessage, int, int, bytes]


class Replies:
    def __init__(
        self,
        spec: FunctionSpec,
        signer: Signer,
        link: EngineLink,
        released: Callable[[HeldMessage], None],
        acks_may_wait: Callable[[], bool] = lambda: False,
    ) -> None:
        self._spec = spec
        self._signer = signer
        self._link = link
        self._released = released
        self._acks_may_wait = acks_may_wait
        self._channel: Channel | None = None
        self._exchange_name = ""
        self._pending: list[tuple[ResultItem | None, HeldMessage, Retry | None]] = []
        self._scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        self._replacing = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    def open(self, channel: Channel, replies_exchange: str) -> None:
        """Publish on this channel (in confirm mode) from now on."""
        self._channel = channel
        self._exchange_name = replies_exchange

    @property
    def busy(self) -> bool:
        return bool(self._pending or self._flushes)

    def add(
        self, item: ResultItem | None, delivery: HeldMessage, retry: Retry | None = None
    ) -> None:
        self._pending.append((item, delivery, retry))
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_soon)

    def flush_soon(self) -> None:
        """Send what is pending: its results at once, in this turn of the loop; waiting
        for their confirms, the retries and the settling in a task."""
        self._scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        outgoing: list[Outgoing] | BaseException
        try:
            outgoing = self._publish_now(pending)
        except BROKER_ERRORS as exc:
            outgoing = exc  # the task below requeues what is unsettled
        task = asyncio.get_running_loop().create_task(self._flush(pending, outgoing))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    def _publish_now(
        self, pending: list[tuple[ResultItem | None, HeldMessage, Retry | None]]
    ) -> list[Outgoing]:
        by_reply: dict[str | None, list[ResultItem]] = {}
        for item, delivery, _ in pending:
            if item is not None:
                by_reply.setdefault(delivery.message.reply_to, []).append(item)
        outgoing: list[Outgoing] = []
        for reply_to, items in by_reply.items():
            if reply_to is not None:
                outgoing += self._publish_results(reply_to, items)
        return outgoing

    async def drain(self, timeout: float | None = None) -> None:
        """Flush everything, and wait (at most ``timeout``) until it is out.

        Flushes are never cancelled from here (a flush cut between a retry's publish and
        its ack would run the input twice): a timeout only stops the waiting.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.busy:
            self.flush_soon()
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            await asyncio.wait(set(self._flushes), timeout=remaining)

    async def settle(self, delivery: HeldMessage, count: int = 1) -> None:
        """``count`` more of the delivery's inputs are accounted for; ack (or requeue) at the
        last."""
        delivery.pending -= count
        if delivery.pending <= 0 and not delivery.message.processed:
            self._released(delivery)
            if delivery.abandoned:
                delivery.message.nack(requeue=True)
            else:
                delivery.message.ack(lazy=self._acks_may_wait())

    async def _flush(
        self,
        pending: list[tuple[ResultItem | None, HeldMessage, Retry | None]],
        outgoing: list[Outgoing] | BaseException,
    ) -> None:
        try:
            if isinstance(outgoing, BaseException):
                raise outgoing
            if self._channel is not None:
                await self._channel.connection.drain()  # the broker is slow: wait for it
            for each in outgoing:
                await self._confirmed(each)
            for _, _, retry in pending:
                if retry is not None:
                    await self._retry(*retry)
            for _, delivery, _ in pending:
                await self.settle(delivery)
        except (*BROKER_ERRORS, EngineError) as exc:
            # The inputs run again (here or elsewhere) and the client drops duplicates.
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("results_not_published", reason=reason, results=len(pending))
            await self._requeue_unsettled([delivery for _, delivery, _ in pending])

    async def _requeue_unsettled(self, deliveries: list[HeldMessage]) -> None:
        for delivery in deliveries:
            if not delivery.message.processed:
                self._released(delivery)
                delivery.message.nack(requeue=True)

    async def publish_results(self, reply_to: str, items: list[ResultItem]) -> None:
        """Publish results and wait for their confirms."""
        for each in self._publish_results(reply_to, items):
            await self._confirmed(each)

    async def _confirmed(self, outgoing: Outgoing) -> None:
        """Wait for a results message's confirm; while the broker refuses it, publish it
        again after a pause (raises ``Nacked`` once that has lasted too long)."""
        refusals = RefusalBackoff(asyncio.get_running_loop().time() + REFUSALS_GIVEN_UP_AFTER)
        while True:
            try:
                await outgoing.confirm
                return
            except Nacked:
                if not refusals.refusals:
                    log.info("results_refused_sending_again", reply_to=outgoing.reply_to)
                if not await refusals.waited():
                    raise
                channel = await self._fresh_channel(outgoing.channel)
                again = channel.publish(
                    outgoing.body,
                    exchange=self._exchange_name,
                    routing_key=outgoing.reply_to,
                    properties=outgoing.properties,
                )
                assert again is not None
                outgoing.channel, outgoing.confirm = channel, again

    async def _fresh_channel(self, refused: Channel) -> Channel:
        """A channel other than ``refused`` to publish on (opened if it is still the one in
        use, which is closed once what was sent on it is settled)."""
        async with self._replacing:
            if self._channel is refused:
                self._channel = await refused.connection.channel(confirm=True)
                retiring = asyncio.get_running_loop().create_task(refused.retire())
                self._retiring.add(retiring)
                retiring.add_done_callback(self._retiring.discard)
        assert self._channel is not None
        return self._channel

    def _publish_results(self, reply_to: str, items: list[ResultItem]) -> list[Outgoing]:
        """Signed, within the size limit; the confirms to wait for. A spawned call's result
        is persistent (it must survive a broker restart); a waiting caller's is transient
        (the caller sends its call again if a broker restart lost it)."""
        channel = self._channel
        assert channel is not None
        sizes = [len(item[4]) + ITEM_OVERHEAD for item in items]
        room = self._signer.max_size - ENVELOPE_OVERHEAD
        valid_for = result_validity(reply_to)
        stored = valid_for is not None
        outgoing = []
        for start, end in slices_within(sizes, MAX_RESULTS_PER_MESSAGE, room):
            chunk = items[start:end]
            correlation_id = chunk[0][0]
            body = self._signer.seal(
                ResultBatch(chunk).to_envelope(), valid_for=valid_for, correlation_id=correlation_id
            )
            properties = Properties(
                correlation_id=correlation_id,
                message_type=KIND_RESULTS,
                delivery_mode=PERSISTENT if stored else TRANSIENT,
            )
            confirm = channel.publish(
                body, exchange=self._exchange_name, routing_key=reply_to, properties=properties
            )
            assert confirm is not None
            outgoing.append(Outgoing(body, properties, reply_to, channel, confirm))
        return outgoing

    async def _retry(self, delivery: HeldMessage, index: int, fmt: int, data: bytes) -> None:
        failures = delivery.batch.failures + 1
        delay = self._spec.retries.delay(failures)
        again = delivery.batch.single((index, fmt, data), failures=failures)
        await self.requeue(delivery.message, [again], delay, expires_at=delivery.expires_at)
        log.info(
            "input_retried",
            invocation=delivery.batch.invocation_id,
            index=index,
            attempt=failures + 1,
            delay=delay,
        )

    async def requeue(
        self,
        message: Inbound,
        batches: list[CallBatch],
        delay: float = 0.0,
        *,
        expires_at: int,
        replaces: str | None = None,
    ) -> None:
        """Have the engine put these batches in the function queue (after ``delay`` s).

        ``replaces`` names a crashed message these batches stand for: the engine then
        never lets it run again, even if its acknowledgement is lost.
        """
        bodies = tuple(
            self._signer.seal(
                batch.to_envelope(),
                reply_to=message.reply_to,
                correlation_id=message.correlation_id,
                expires_at=expires_at,
            )
            for batch in batches
        )
        await self._link.request(
            Requeue(
                bodies,
                correlation_id=message.correlation_id,
                reply_to=message.reply_to,
                delay_ms=round(delay * 1000),
                replaces=replaces,
            )
        )
