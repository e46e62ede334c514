"""An environment's dead-letter queue, read without losing anything, and mended.

Inputs land in ``warren.v1.<env>.dead`` when they crashed their container too often (the
crash limit), failed verification, or expired in their queue; each dead letter carries
the reason and the queue it came from (:mod:`warren_engine.publisher`). Here the engine
lists them, shows one, sends one back to its function, or purges them all
(``warren dead list|show|retry|purge``, and the dashboard's list).

**Reading without taking.** AMQP has no way to look into a queue, so a reading takes the
messages with ``basic.get`` and no acknowledgement, notes what it needs, and hands them
all back at the end with one ``basic.nack(multiple, requeue)``: RabbitMQ puts requeued
messages back where they were and keeps their expiry (the queue's week-long TTL still
counts from when they arrived). Anything the reading did not settle goes back in any
case when its channel closes, if it fails halfway or the engine dies. A reading stops at
the number of messages the queue held when it began, so dead letters arriving meanwhile
cannot keep it going; one lock keeps this engine's readings from hiding messages from
each other.

**Which message is which.** A dead input's id is the first 12 hex digits of a SHA-256 of
its body: the same whatever its position, across readings and engine restarts, with no
header anyone had to stamp (so it also names what the broker dead-lettered on its own,
or an older engine did). Message ids do not do: the inputs of one batched message that
crashed are dead-lettered one per message, all with the crashed message's id. Identical
bodies are one input, listed once (``copies``); a retry sends it once and removes every
copy. A unique prefix of at least 4 digits will do where an id is asked for.

**What is shown.** The body is decoded only when this engine's key vouches for it (the
signature is checked first, as a container does), and a pickle is never loaded: an
input's arguments are shown only if they travelled as msgpack or JSON.

**Retry.** The body goes back exactly as it was signed (the signature also covers the
``reply_to`` and ``correlation_id``, which go with it), so it must still verify: an input
past its expiry (``WARREN_MESSAGE_EXPIRY``, or the spawned call's retention) or one that
failed verification is refused with the reason. It goes to the queue its function has
*now* (a redeployed app keeps its queue names; a variant reset by a redeploy, or an app
no longer running, is a ``NotFoundError``), under a new message id (the crash ledger
remembers the old one as replaced), persistent and confirmed; only then is it taken off
the dead-letter queue, so a failure halfway leaves it there (an engine that dies between
the two leaves it in both: at least once, as everywhere). It still carries its crash
count, at the limit: if it crashes once more it is dead-lettered again at once.

Where the retried input's result goes: a spawned call's result queue is durable and
held the ``DeadLetteredError`` its caller was given; the retry takes that out (only once
the input is sent), so ``FunctionCall.get`` returns the new outcome. A ``remote`` or
``map`` caller was answered ``DeadLetteredError`` already: if it still runs, it drops the
late result as a duplicate; if it left, its result queue expired and the result is
dropped by the broker. Either way the function runs again, for its effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import string
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelNotFoundEntity, DeliveryError
from warren.exceptions import InvalidError, MessageRejectedError, NotFoundError, WarrenError
from warren.wire import codec, naming, topology
from warren.wire.control import (
    DeadArgument,
    DeadInput,
    DeadInputDetail,
    DeadInputListing,
    DeadInputRetried,
)
from warren.wire.protocol import KIND_CALLS, CallBatch
from warren.wire.signing import MessageExpiredError, Signer

from warren_engine.publisher import BROKER_ERRORS, SOURCE_QUEUE_HEADER, call_message

log = structlog.get_logger(__name__)

ID_CHARS = 12
MIN_ID_CHARS = 4
LIST_LIMIT = 1000
PREVIEW_CHARS = 300
FORMATS = {
    codec.FORMAT_MSGPACK: "msgpack",
    codec.FORMAT_PICKLE: "pickle",
    codec.FORMAT_JSON: "json",
}

# (environment, app instance, pool key) -> that function's queue now, None if not running
CurrentQueue = Callable[[str, str, str], str | None]


# -- the pure part: what one dead letter says ---------------------------------------------


def dead_input_id(body: bytes) -> str:
    """The id of the dead input whose message has this body."""
    return hashlib.sha256(b"warren-dead-input:" + body).hexdigest()[:ID_CHARS]


def parse_id(text: str) -> str:
    """An id (or a prefix of one) as a user typed it, checked; ``InvalidError`` if it
    cannot be one."""
    given = text.strip().lower()
    if not MIN_ID_CHARS <= len(given) <= ID_CHARS or not set(given) <= set(string.hexdigits):
        raise InvalidError(
            f"{text!r} is not a dead input id: {MIN_ID_CHARS} to {ID_CHARS} hex digits, "
            "as `warren dead list` shows them"
        )
    return given


@dataclass(frozen=True, slots=True)
class DeadMessage:
    """What the dead-letter queue holds of one message: its body and properties."""

    body: bytes
    headers: Mapping[str, Any]
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    type: str | None = None
    timestamp: float | None = None

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> DeadMessage:
        stamp = message.timestamp
        return cls(
            message.body,
            dict(message.headers or {}),
            message.message_id,
            message.correlation_id,
            message.reply_to,
            message.type,
            _seconds(stamp) if isinstance(stamp, datetime) else None,
        )

    @property
    def id(self) -> str:
        return dead_input_id(self.body)


# The messages of a pass that a caller kept: the delivery (to settle) and what it holds.
Copies = list[tuple[AbstractIncomingMessage, DeadMessage]]


@dataclass(frozen=True, slots=True)
class Reading:
    """A dead letter as this engine reads it: its summary, and the call batch inside it
    if this engine's key vouches for it (else ``problem`` says why not)."""

    input: DeadInput
    batch: CallBatch | None
    problem: str | None
    expires_at: float | None


def read(message: DeadMessage, signer: Signer) -> Reading:
    """Summarise a dead letter; its body is decoded only once its signature checks out."""
    reason, queue, dead_at = _provenance(message.headers)
    batch: CallBatch | None = None
    problem: str | None = None
    expires_at: float | None = None
    try:
        envelope = signer.open_message(message, kind=KIND_CALLS)
    except MessageExpiredError as exc:  # genuine, only too old to run
        envelope, problem = exc.envelope, str(exc)
    except MessageRejectedError as exc:
        envelope, problem = None, str(exc)
    if envelope is not None:
        expires_at = float(envelope.expires_at)
        try:
            batch = CallBatch.from_body(envelope.body)
        except WarrenError as exc:
            problem = str(exc)
    owner = naming.function_of_queue(queue) if queue else None
    summary = DeadInput(
        message.id,
        reason,
        len(message.body),
        verified=batch is not None,
        app=owner[1] if owner else None,
        function=_pool_key(owner[2], owner[3]) if owner else None,
        queue=queue,
        dead_at=message.timestamp if message.timestamp is not None else dead_at,
        invocation=batch.invocation_id if batch else None,
        inputs=tuple(index for index, _, _ in batch.inputs) if batch else (),
        crashes=batch.crashes if batch else 0,
    )
    return Reading(summary, batch, problem, expires_at)


def listing(found: list[DeadInput], total: int, limit: int) -> DeadInputListing:
    """The distinct dead inputs of a pass over the queue (identical bodies once, counted),
    at most ``limit`` of them, in queue order."""
    seen: dict[str, DeadInput] = {}
    for dead in found:
        earlier = seen.get(dead.id)
        if earlier is not None:
            seen[earlier.id] = _with_copies(earlier, earlier.copies + 1)
        elif len(seen) < limit:
            seen[dead.id] = dead
    return DeadInputListing(tuple(seen.values()), total)


def detail(message: DeadMessage, reading: Reading, copies: int = 1) -> DeadInputDetail:
    """Everything ``warren dead show`` says of one dead input."""
    reply_to = message.reply_to
    return DeadInputDetail(
        _with_copies(reading.input, copies),
        {str(key): _header_text(value) for key, value in sorted(message.headers.items())},
        arguments(reading.batch) if reading.batch is not None else (),
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=reply_to,
        type=message.type,
        problem=reading.problem,
        expires_at=reading.expires_at,
        stored_result=reply_to is not None and naming.is_call_queue(reply_to),
    )


def arguments(batch: CallBatch) -> tuple[DeadArgument, ...]:
    """Each input's arguments as far as they can be shown without running code."""
    return tuple(
        DeadArgument(index, FORMATS.get(fmt, "unknown"), len(data), preview(fmt, data))
        for index, fmt, data in batch.inputs
    )


def preview(fmt: int, data: bytes) -> str | None:
    """``(args, kwargs)`` as a call's argument list, shortened; None for a pickle (loading
    one runs code) or for what does not decode."""
    try:
        if fmt == codec.FORMAT_MSGPACK:
            decoded = codec.unpackb(data)
        elif fmt == codec.FORMAT_JSON:
            decoded = orjson.loads(data)
        else:
            return None
    except (ValueError, TypeError, orjson.JSONDecodeError):
        return None
    if not (isinstance(decoded, list) and len(decoded) == 2 and isinstance(decoded[1], dict)):
        return None
    args, kwargs = decoded
    shown = [repr(value) for value in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    text = f"({', '.join(shown)})"
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _provenance(headers: Mapping[str, Any]) -> tuple[str, str | None, float | None]:
    """Why a message is here, where from, and when (if the broker recorded it): from
    the engine's headers, else from the broker's own ``x-death``."""
    reason = headers.get(topology.REASON_HEADER)
    queue = headers.get(SOURCE_QUEUE_HEADER)
    deaths = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths else None
    when: float | None = None
    if isinstance(death, Mapping):
        queue = queue if queue is not None else death.get("queue")
        if reason is None:
            reason = f"dead-lettered by the broker ({death.get('reason', 'no reason given')})"
        stamp = death.get("time")
        when = _seconds(stamp) if isinstance(stamp, datetime) else None
    text = _header_text(reason) if reason is not None else "no reason recorded"
    return text, _header_text(queue) if queue is not None else None, when


def _header_text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _seconds(stamp: datetime) -> float:
    # AMQP timestamps carry no zone: they are UTC.
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()


def _pool_key(function: str, variant: str | None) -> str:
    return function if variant is None else f"{function}.{variant}"


def _with_copies(dead: DeadInput, copies: int) -> DeadInput:
    return dataclasses.replace(dead, copies=copies)


# -- the I/O shell ------------------------------------------------------------------------


class _Pass:
    """One pass over a dead-letter queue on a channel of its own: every message taken
    unacknowledged, and given back at the end unless it was settled."""

    def __init__(self, channel: AbstractChannel, queue: AbstractQueue | None, count: int) -> None:
        self.channel = channel
        self._queue = queue
        self.count = count
        self._unsettled: dict[int, AbstractIncomingMessage] = {}
        self._latest: AbstractIncomingMessage | None = None  # the last one not kept

    async def messages(
        self, keep: Callable[[DeadMessage], bool], at_most: int | None = None
    ) -> Copies:
        """Take every message there was when the reading began (or the first ``at_most``);
        the ones ``keep`` wants are returned (for the caller to settle), the others only
        noted."""
        kept: Copies = []
        if self._queue is None:
            return kept
        for _ in range(self.count if at_most is None else min(self.count, at_most)):
            message = await self._queue.get(no_ack=False, fail=False)
            if message is None:
                break
            dead = DeadMessage.of(message)
            if keep(dead):
                kept.append((message, dead))
                self._unsettled[_tag(message)] = message
            else:
                self._latest = message
        return kept

    async def ack(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        self._unsettled.pop(_tag(message), None)

    async def give_back(self) -> None:
        """Requeue everything not settled, with one nack of the highest tag (``multiple``)."""
        candidates = list(self._unsettled.values())
        if self._latest is not None:
            candidates.append(self._latest)
        if candidates:
            last = max(candidates, key=_tag)
            await last.nack(multiple=True, requeue=True)


def _tag(message: AbstractIncomingMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None  # taken with acknowledgements
    return tag


class DeadLetters:
    """Lists, shows, retries and purges the dead inputs of an engine's environments.

    Example (the dashboard's view of the queue)::

        listing = await registry.dead_letters.list("main")
        for dead in listing.inputs:
            print(dead.id, dead.app, dead.function, dead.reason)
    """

    def __init__(
        self, connection: AbstractRobustConnection, signer: Signer, current_queue: CurrentQueue
    ) -> None:
        self._connection = connection
        self._signer = signer
        self._current_queue = current_queue
        self._lock = asyncio.Lock()

    async def list(self, environment: str, limit: int = LIST_LIMIT) -> DeadInputListing:
        """The dead inputs among the first ``limit`` messages of the environment's queue,
        in queue order; ``total`` counts them all."""
        if limit < 1:
            raise InvalidError(f"limit must be at least 1, got {limit}")
        found: list[DeadInput] = []

        def note(message: DeadMessage) -> bool:
            found.append(read(message, self._signer).input)  # summaries only: not the bodies
            return False

        async with self._pass(environment) as reading:
            await reading.messages(note, at_most=limit)
        return listing(found, reading.count, limit)

    async def show(self, environment: str, dead_id: str) -> DeadInputDetail:
        """Everything known of one dead input (``dead_id``: its id, or a unique prefix)."""
        prefix = parse_id(dead_id)
        async with self._pass(environment) as reading:
            found = await self._find(reading, environment, prefix)
        return detail(found[0][1], read(found[0][1], self._signer), len(found))

    async def retry(self, environment: str, dead_id: str) -> DeadInputRetried:
        """Send a dead input back to its function's current queue, then take it (and its
        copies) off the dead-letter queue."""
        prefix = parse_id(dead_id)
        async with self._pass(environment) as reading:
            found = await self._find(reading, environment, prefix)
            message = found[0][1]
            summary = read(message, self._signer)
            if summary.problem is not None:
                raise InvalidError(
                    f"dead input {summary.input.id} cannot be retried: {summary.problem}"
                )
            queue = self._target(environment, summary.input)
            stored = message.reply_to is not None and naming.is_call_queue(message.reply_to)
            async with self._reopened(message.reply_to if stored else None):
                await self._send(reading.channel, queue, message)
            for incoming, _ in found:
                await reading.ack(incoming)
        log.info("dead_input_retried", id=summary.input.id, queue=queue, copies=len(found))
        return DeadInputRetried(summary.input.id, queue, stored)

    async def purge(self, environment: str) -> int:
        """Empty the environment's dead-letter queue; how many messages it held."""
        name = naming.dead_letter_queue(environment)
        async with self._lock, self._connection.channel() as channel:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelNotFoundEntity:
                return 0
            purged = (await queue.purge()).message_count or 0
        log.warning("dead_inputs_purged", environment=environment, purged=purged)
        return purged

    @contextlib.asynccontextmanager
    async def _pass(self, environment: str) -> AsyncIterator[_Pass]:
        name = naming.dead_letter_queue(environment)
        async with (
            self._lock,
            self._connection.channel(publisher_confirms=True, on_return_raises=True) as channel,
        ):
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelNotFoundEntity:  # nothing was ever dead-lettered there
                yield _Pass(channel, None, 0)
                return
            count = queue.declaration_result.message_count or 0
            reading = _Pass(channel, queue, count)
            try:
                yield reading
            finally:
                try:
                    await reading.give_back()
                except BROKER_ERRORS as exc:  # closing the channel gives them back anyway
                    log.warning("dead_inputs_not_given_back", reason=f"{type(exc).__name__}: {exc}")

    async def _find(self, reading: _Pass, environment: str, prefix: str) -> Copies:
        """Every copy of the one dead input whose id starts with ``prefix``."""
        found = await reading.messages(lambda message: message.id.startswith(prefix))
        ids = sorted({dead.id for _, dead in found})
        if not ids:
            raise NotFoundError(
                f"no dead input {prefix!r} in environment {environment!r} (see `warren dead list`)"
            )
        if len(ids) > 1:
            raise InvalidError(f"{prefix!r} names several dead inputs: {', '.join(ids)}")
        return found

    def _target(self, environment: str, dead: DeadInput) -> str:
        if dead.app is None or dead.function is None:
            raise InvalidError(
                f"dead input {dead.id} cannot be retried: it names no function queue it came from"
            )
        queue = self._current_queue(environment, dead.app, dead.function)
        if queue is None:
            raise NotFoundError(
                f"dead input {dead.id} cannot be retried: {dead.app}.{dead.function} is not "
                f"running in environment {environment!r} (deploy it again, or purge the input)"
            )
        return queue

    @contextlib.asynccontextmanager
    async def _reopened(self, call_queue: str | None) -> AsyncIterator[None]:
        """Around sending a spawned call's input again: what its result queue holds (the
        ``DeadLetteredError`` it was answered) is taken out once the input is sent, and
        given back if it was not. Nothing to do for a caller's own result queue."""
        if call_queue is None:
            yield
            return
        async with self._connection.channel() as channel:
            try:
                queue = await channel.declare_queue(call_queue, passive=True)
            except ChannelNotFoundEntity:
                raise InvalidError(
                    "its spawned call's result queue is gone (its retention passed): "
                    "nobody could get the result"
                ) from None
            held = []
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                held.append(message)
            yield
            for message in held:
                await message.ack()

    async def _send(self, channel: AbstractChannel, queue: str, message: DeadMessage) -> None:
        outgoing = call_message(message.body, message.correlation_id, message.reply_to)
        try:
            await channel.default_exchange.publish(outgoing, routing_key=queue, mandatory=True)
        except DeliveryError:
            raise NotFoundError(f"the queue {queue!r} is gone: the input was not sent") from None
