"""The AMQP frames every call sends and receives, encoded and decoded directly.

Each call publishes one message and receives a delivery, a confirm and, in a
container, sends an acknowledgement. pamqp encodes and decodes any AMQP frame, field
by field through its type tables; for these few frames that costs more than the rest
of a fast call's handling, so they are packed and unpacked here with ``struct``, to
the letter of AMQP 0-9-1 (``basic.publish``, ``basic.deliver``, ``basic.ack``, the
content header of class ``basic``). Every other frame, and the field tables of
message headers, still go through pamqp, which the tests also use as the oracle for
what is here. Pure; no I/O.
"""

from __future__ import annotations

import datetime
import struct
from dataclasses import dataclass, fields
from typing import Any

from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
FRAME_END = b"\xce"
FRAME_OVERHEAD = 8
BASIC = 60
PUBLISH, DELIVER, ACK = 40, 60, 80

_FRAME = struct.Struct(">BHI")
_METHOD = struct.Struct(">HH")
_HEADER = struct.Struct(">HHQH")
_ACK = struct.Struct(">HHQB")
_DELIVERY_TAG = struct.Struct(">QB")


@dataclass(slots=True)
class Properties:
    """A message's basic properties (``None``: not set), in AMQP's order."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: datetime.datetime | None = None
    message_type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


_NAMES = tuple(f.name for f in fields(Properties))
_FLAGS = {name: 1 << (15 - position) for position, name in enumerate(_NAMES)}
_OCTETS = frozenset({"delivery_mode", "priority"})


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"a short string holds 255 bytes at most: {value[:40]!r}...")
    return bytes((len(raw),)) + raw


def encode_properties(properties: Properties) -> tuple[int, bytes]:
    """The property flags and the encoded values that are set (an empty or zero value
    counts as not set, as pamqp and the other clients have it)."""
    flags, parts = 0, []
    for name in _NAMES:
        value = getattr(properties, name)
        if not value:
            continue
        flags |= _FLAGS[name]
        if name in _OCTETS:
            parts.append(bytes((value,)))
        elif name == "headers":
            parts.append(pamqp_encode.field_table(value))
        elif name == "timestamp":
            parts.append(pamqp_encode.timestamp(value))
        else:
            parts.append(_shortstr(value))
    return flags, b"".join(parts)


def decode_properties(flags: int, data: bytes, offset: int) -> Properties:
    """The properties whose ``flags`` are set, read from ``data`` at ``offset``."""
    properties = Properties()
    if not flags:
        return properties
    for name in _NAMES:
        if not flags & _FLAGS[name]:
            continue
        if name in _OCTETS:
            value: Any = data[offset]
            offset += 1
        elif name == "headers":
            used, value = pamqp_decode.field_table(data[offset:])
            offset += used
        elif name == "timestamp":
            used, value = pamqp_decode.timestamp(data[offset : offset + 8])
            offset += used
        else:
            length = data[offset]
            value = data[offset + 1 : offset + 1 + length].decode()
            offset += 1 + length
        setattr(properties, name, value)
    return properties


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME.pack(kind, channel, len(payload)) + payload + FRAME_END


def publish(
    channel: int,
    exchange: str,
    routing_key: str,
    mandatory: bool,
    properties: Properties,
    body: bytes,
    frame_max: int,
) -> bytes:
    """``basic.publish``, its content header and its body frames, as one byte string."""
    method = (
        _METHOD.pack(BASIC, PUBLISH)
        + b"\x00\x00"  # reserved (ticket)
        + _shortstr(exchange)
        + _shortstr(routing_key)
        + (b"\x01" if mandatory else b"\x00")
    )
    flags, encoded = encode_properties(properties)
    parts = [
        _frame(FRAME_METHOD, channel, method),
        _frame(FRAME_HEADER, channel, _HEADER.pack(BASIC, 0, len(body), flags) + encoded),
    ]
    room = frame_max - FRAME_OVERHEAD
    for start in range(0, len(body), room):
        parts.append(_frame(FRAME_BODY, channel, body[start : start + room]))
    return b"".join(parts)


def ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    return _frame(FRAME_METHOD, channel, _ACK.pack(BASIC, ACK, delivery_tag, int(multiple)))


def method_ids(payload: bytes) -> tuple[int, int]:
    """The class and method of a method frame's payload."""
    class_id, method_id = _METHOD.unpack_from(payload)
    return class_id, method_id


@dataclass(slots=True)
class DeliverMethod:
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str


def decode_deliver(payload: bytes) -> DeliverMethod:
    """``basic.deliver`` (class 60, method 60) from a method frame's payload."""
    offset = 4
    length = payload[offset]
    consumer_tag = payload[offset + 1 : offset + 1 + length].decode()
    offset += 1 + length
    delivery_tag, bits = _DELIVERY_TAG.unpack_from(payload, offset)
    offset += 9
    length = payload[offset]
    exchange = payload[offset + 1 : offset + 1 + length].decode()
    offset += 1 + length
    length = payload[offset]
    routing_key = payload[offset + 1 : offset + 1 + length].decode()
    return DeliverMethod(consumer_tag, delivery_tag, bool(bits & 1), exchange, routing_key)


def decode_ack(payload: bytes) -> tuple[int, bool]:
    """``basic.ack`` (a publisher confirm): its delivery tag and ``multiple``."""
    delivery_tag, bits = _DELIVERY_TAG.unpack_from(payload, 4)
    return delivery_tag, bool(bits & 1)


def decode_header(payload: bytes) -> tuple[int, int, Properties]:
    """A content header's class, body size and properties."""
    class_id, _, body_size, flags = _HEADER.unpack_from(payload)
    offset = _HEADER.size
    more = flags & 1  # a continuation flag word: never sent for class basic
    while more:
        (extra,) = struct.unpack_from(">H", payload, offset)
        offset += 2
        more = extra & 1
    return class_id, body_size, decode_properties(flags, payload, offset)
