"""The messages a container and its engine exchange on their pipes.

A container writes **events** on its status pipe: :class:`Ready` or :class:`Failed`
once, then :class:`Status` reports, :class:`Raised` when an input's attempt raised,
:class:`Dropped` when its broker connection went, and :class:`Request` for what only
the engine may do (one of the **queries**
:class:`AskVerdict`, :class:`Requeue`, :class:`DeadLetter`). The engine writes
**replies** on the replies pipe: :class:`Answered` carrying a **response**
(:class:`Verdict` or :class:`Done`), or :class:`Refused` saying why not.

Each message is a msgpack array, its kind's tag first and its fields after in the
order they are declared, ``[tag, field, ...]``; a request or answer carries its query or
response as a nested array. Arrays, not maps: status reports come several times a
second from every container, and the field names are the same every time. Decoding
checks the tag and every field's type, and raises ``EngineError`` naming what is wrong;
each pipe decodes only its own direction's kinds.

This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias, TypeVar

import msgpack
from warren.exceptions import EngineError
from warren.wire.codec import packb, unpackb

from warren_engine.pipe.tally import SECONDS_BUCKETS, Histogram, Tally

T = TypeVar("T")


class Fields:
    """The fields of one message being decoded, taken in order, each of its type."""

    __slots__ = ("_kind", "_next", "_values")

    def __init__(self, kind: str, values: list[Any]) -> None:
        self._kind = kind
        self._values = values
        self._next = 1  # after the tag

    def _take(self, expected: str) -> Any:
        if self._next >= len(self._values):
            raise self._malformed(f"it ends where {expected} was expected")
        value = self._values[self._next]
        self._next += 1
        return value

    def _wrong(self, value: Any, expected: str) -> EngineError:
        return self._malformed(
            f"field {self._next - 1} is a {type(value).__name__}, not {expected}"
        )

    def _malformed(self, why: str) -> EngineError:
        return EngineError(f"malformed {self._kind} message on a container pipe: {why}")

    def integer(self) -> int:
        value = self._take("an int")
        if type(value) is not int:
            raise self._wrong(value, "an int")
        return value

    def number(self) -> float:
        value = self._take("a number")
        if type(value) is float:
            return value
        if type(value) is not int:
            raise self._wrong(value, "a number")
        return float(value)

    def text(self) -> str:
        value = self._take("a str")
        if type(value) is not str:
            raise self._wrong(value, "a str")
        return value

    def switch(self) -> bool:
        value = self._take("a bool")
        if type(value) is not bool:
            raise self._wrong(value, "a bool")
        return value

    def maybe_text(self) -> str | None:
        value = self._take("a str or nil")
        if value is not None and type(value) is not str:
            raise self._wrong(value, "a str or nil")
        return value

    def blob(self) -> bytes:
        value = self._take("bytes")
        if type(value) is not bytes:
            raise self._wrong(value, "bytes")
        return value

    def counts(self, length: int) -> list[int]:
        """An array of ``length`` ints (a histogram's buckets)."""
        value = self._take("an array of ints")
        if type(value) is not list or any(type(item) is not int for item in value):
            raise self._wrong(value, "an array of ints")
        if len(value) != length:
            raise self._malformed(
                f"field {self._next - 1} has {len(value)} counts where {length} were expected"
            )
        return value

    def blobs(self) -> tuple[bytes, ...]:
        value = self._take("an array of bytes")
        if type(value) is not list or any(type(item) is not bytes for item in value):
            raise self._wrong(value, "an array of bytes")
        return tuple(value)

    def nested(self, kinds: dict[int, Kind[T]], what: str) -> T:
        value = self._take(what)
        if type(value) is not list:
            raise self._wrong(value, what)
        return _read(value, kinds, what)

    def end(self) -> None:
        if self._next != len(self._values):
            raise self._malformed(
                f"{len(self._values) - 1} fields where {self._next - 1} were expected"
            )


Kind: TypeAlias = tuple[str, Callable[[Fields], T]]
"""A kind's name (for error messages) and its decoder."""


# -- queries (in a Request) and their responses (in an Answered) ---------------------------


@dataclass(frozen=True, slots=True)
class AskVerdict:
    """Was this redelivered message running in a container that died? See ``Verdict``."""

    TAG: ClassVar[int] = 10
    message_id: str

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.message_id]

    @classmethod
    def from_wire(cls, fields: Fields) -> AskVerdict:
        return cls(fields.text())


@dataclass(frozen=True, slots=True)
class Requeue:
    """Publish these sealed call batches to the container's queue, after ``delay_ms``.

    ``replaces`` names a crashed message they stand for: it must never run again.
    """

    TAG: ClassVar[int] = 11
    bodies: tuple[bytes, ...]
    correlation_id: str | None
    reply_to: str | None
    delay_ms: int = 0
    replaces: str | None = None

    def to_wire(self) -> list[Any]:
        return [
            self.TAG,
            list(self.bodies),
            self.correlation_id,
            self.reply_to,
            self.delay_ms,
            self.replaces,
        ]

    @classmethod
    def from_wire(cls, fields: Fields) -> Requeue:
        return cls(
            fields.blobs(),
            fields.maybe_text(),
            fields.maybe_text(),
            fields.integer(),
            fields.maybe_text(),
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Put this message in the dead-letter queue, for ``reason``, with these properties
    of the original (the publisher's ``CarriedProperties``).

    ``replaces`` names a crashed message it stands for: it must never run again.
    """

    TAG: ClassVar[int] = 12
    body: bytes
    reason: str
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    type: str | None = None
    replaces: str | None = None

    def to_wire(self) -> list[Any]:
        return [
            self.TAG,
            self.body,
            self.reason,
            self.message_id,
            self.correlation_id,
            self.reply_to,
            self.type,
            self.replaces,
        ]

    @classmethod
    def from_wire(cls, fields: Fields) -> DeadLetter:
        return cls(
            fields.blob(),
            fields.text(),
            fields.maybe_text(),
            fields.maybe_text(),
            fields.maybe_text(),
            fields.maybe_text(),
            fields.maybe_text(),
        )


# What the crash ledger (warren_engine.pool.crash_ledger) says of a redelivered message.
HEALTHY = "healthy"  # its last holder did not crash: run it
CRASHED = "crashed"  # its last holder died running it: count a crash for each input
REPLACED = "replaced"  # copies with the new crash count went out already: drop it


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to ``AskVerdict``: one of the crash ledger's verdicts."""

    TAG: ClassVar[int] = 20
    verdict: str

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.verdict]

    @classmethod
    def from_wire(cls, fields: Fields) -> Verdict:
        return cls(fields.text())


@dataclass(frozen=True, slots=True)
class Done:
    """The answer to ``Requeue`` and ``DeadLetter``: published, and confirmed."""

    TAG: ClassVar[int] = 21

    def to_wire(self) -> list[Any]:
        return [self.TAG]

    @classmethod
    def from_wire(cls, fields: Fields) -> Done:
        return cls()


Query: TypeAlias = AskVerdict | Requeue | DeadLetter
Response: TypeAlias = Verdict | Done

ANSWERS: dict[type[Query], type[Response]] = {
    AskVerdict: Verdict,
    Requeue: Done,
    DeadLetter: Done,
}
"""The response each query gets when it is answered."""

_QUERIES: dict[int, Kind[Query]] = {
    AskVerdict.TAG: ("AskVerdict", AskVerdict.from_wire),
    Requeue.TAG: ("Requeue", Requeue.from_wire),
    DeadLetter.TAG: ("DeadLetter", DeadLetter.from_wire),
}
_RESPONSES: dict[int, Kind[Response]] = {
    Verdict.TAG: ("Verdict", Verdict.from_wire),
    Done.TAG: ("Done", Done.from_wire),
}


# -- events: the status pipe, container to engine -----------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The container loaded its code and consumes its queue."""

    TAG: ClassVar[int] = 1

    def to_wire(self) -> list[Any]:
        return [self.TAG]

    @classmethod
    def from_wire(cls, fields: Fields) -> Ready:
        return cls()


@dataclass(frozen=True, slots=True)
class Failed:
    """The container cannot run: its exception's type name, message and traceback."""

    TAG: ClassVar[int] = 2
    error_type: str
    message: str
    traceback: str = ""

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.error_type, self.message, self.traceback]

    @classmethod
    def from_wire(cls, fields: Fields) -> Failed:
        return cls(fields.text(), fields.text(), fields.text())


@dataclass(frozen=True, slots=True)
class Status:
    """How busy the container is, what it received since it started, and how its inputs
    ended (its :class:`~warren_engine.pipe.tally.Tally`, a copy, flattened on the wire)."""

    TAG: ClassVar[int] = 3
    running: int  # inputs held
    idle_for: float  # seconds since it last held one (0 while it holds any)
    batch: float  # inputs per message, on average
    messages: int
    inputs: int
    tally: Tally = field(default_factory=Tally)

    def to_wire(self) -> list[Any]:
        tally = self.tally
        return [
            self.TAG,
            self.running,
            self.idle_for,
            self.batch,
            self.messages,
            self.inputs,
            tally.received,
            tally.succeeded,
            tally.failed,
            tally.retried,
            tally.timed_out,
            tally.run_seconds.counts,
            tally.run_seconds.total,
            tally.queue_wait.counts,
            tally.queue_wait.total,
        ]

    @classmethod
    def from_wire(cls, fields: Fields) -> Status:
        return cls(
            fields.integer(),
            fields.number(),
            fields.number(),
            fields.integer(),
            fields.integer(),
            Tally(
                fields.integer(),
                fields.integer(),
                fields.integer(),
                fields.integer(),
                fields.integer(),
                _histogram(fields),
                _histogram(fields),
            ),
        )


def _histogram(fields: Fields) -> Histogram:
    return Histogram(fields.counts(len(SECONDS_BUCKETS) + 1), fields.number())


@dataclass(frozen=True, slots=True)
class Dropped:
    """The container lost its broker connection: what it held is redelivered."""

    TAG: ClassVar[int] = 4

    def to_wire(self) -> list[Any]:
        return [self.TAG]

    @classmethod
    def from_wire(cls, fields: Fields) -> Dropped:
        return cls()


@dataclass(frozen=True, slots=True)
class Request:
    """A query, numbered so that its reply finds it."""

    TAG: ClassVar[int] = 5
    id: int
    query: Query

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.id, self.query.to_wire()]

    @classmethod
    def from_wire(cls, fields: Fields) -> Request:
        return cls(fields.integer(), fields.nested(_QUERIES, "a query"))


@dataclass(frozen=True, slots=True)
class Raised:
    """An attempt of an input raised: when (a Unix time), which input, which attempt,
    whether it will be retried, and its exception's type, message and traceback.

    The engine keeps the last few per pool for the dashboard: the caller's result has the
    whole record, but the engine never reads result queues. ``unreported`` counts the
    failures the container left out since its previous report (over its report budget).
    """

    TAG: ClassVar[int] = 8
    time: float
    call: str
    index: int
    attempt: int
    retrying: bool
    error_type: str
    message: str
    traceback: str
    unreported: int = 0

    def to_wire(self) -> list[Any]:
        return [
            self.TAG,
            self.time,
            self.call,
            self.index,
            self.attempt,
            self.retrying,
            self.error_type,
            self.message,
            self.traceback,
            self.unreported,
        ]

    @classmethod
    def from_wire(cls, fields: Fields) -> Raised:
        return cls(
            fields.number(),
            fields.text(),
            fields.integer(),
            fields.integer(),
            fields.switch(),
            fields.text(),
            fields.text(),
            fields.text(),
            fields.integer(),
        )


Event: TypeAlias = Ready | Failed | Status | Raised | Dropped | Request

_EVENTS: dict[int, Kind[Event]] = {
    Ready.TAG: ("Ready", Ready.from_wire),
    Failed.TAG: ("Failed", Failed.from_wire),
    Status.TAG: ("Status", Status.from_wire),
    Raised.TAG: ("Raised", Raised.from_wire),
    Dropped.TAG: ("Dropped", Dropped.from_wire),
    Request.TAG: ("Request", Request.from_wire),
}


# -- replies: the replies pipe, engine to container ---------------------------------------


@dataclass(frozen=True, slots=True)
class Answered:
    """Request ``id`` was done; ``response`` is what it gave."""

    TAG: ClassVar[int] = 6
    id: int
    response: Response

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.id, self.response.to_wire()]

    @classmethod
    def from_wire(cls, fields: Fields) -> Answered:
        return cls(fields.integer(), fields.nested(_RESPONSES, "a response"))


@dataclass(frozen=True, slots=True)
class Refused:
    """Request ``id`` failed, for the reason ``error``."""

    TAG: ClassVar[int] = 7
    id: int
    error: str

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.id, self.error]

    @classmethod
    def from_wire(cls, fields: Fields) -> Refused:
        return cls(fields.integer(), fields.text())


Reply: TypeAlias = Answered | Refused

_REPLIES: dict[int, Kind[Reply]] = {
    Answered.TAG: ("Answered", Answered.from_wire),
    Refused.TAG: ("Refused", Refused.from_wire),
}


# -- bytes ---------------------------------------------------------------------------------


def encode(message: Event | Reply) -> bytes:
    return packb(message.to_wire())


def decode_event(data: bytes) -> Event:
    """An event read on a status pipe; ``EngineError`` if it is not one."""
    return _read(_unpack(data), _EVENTS, "an event")


def decode_reply(data: bytes) -> Reply:
    """A reply read on a replies pipe; ``EngineError`` if it is not one."""
    return _read(_unpack(data), _REPLIES, "a reply")


def _unpack(data: bytes) -> Any:
    try:
        return unpackb(data)
    except (ValueError, msgpack.UnpackException) as exc:
        raise EngineError(f"undecodable message on a container pipe: {exc}") from None


def _read(values: Any, kinds: dict[int, Kind[T]], what: str) -> T:
    if type(values) is not list or not values or type(values[0]) is not int:
        raise EngineError(f"malformed message on a container pipe, not {what}: {values!r:.80}")
    kind = kinds.get(values[0])
    if kind is None:
        raise EngineError(f"unknown kind {values[0]} on a container pipe where {what} belongs")
    name, decoder = kind
    fields = Fields(name, values)
    message = decoder(fields)
    fields.end()
    return message
