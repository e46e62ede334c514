"""The codec: values and envelopes, with no broker."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from warren.exceptions import DeserializationError, SerializationError, VersionMismatchError
from warren.wire.codec import (
    FORMAT_MSGPACK,
    FORMAT_PICKLE,
    Envelope,
    decode_call_args,
    decode_value,
    encode_call_args,
    encode_value,
    packb,
    unpack_envelope,
)


@dataclass(frozen=True)
class Item:
    name: str
    tags: tuple[str, ...]


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        1.25,
        "",
        "ünïcode",
        b"",
        b"\x00\x01",
        [],
        [1, [2, [3]]],
        {},
        {"a": {"b": [None, 1.5]}},
        {1: "int key"},
    ],
)
def test_plain_data_round_trips_as_msgpack(value: Any) -> None:
    fmt, data = encode_value(value)
    assert fmt == FORMAT_MSGPACK
    decoded = decode_value(fmt, data)
    assert decoded == value
    assert type(decoded) is type(value)


@pytest.mark.parametrize(
    "value",
    [
        (1, 2),
        [1, (2, 3)],
        {"k": (1,)},
        {(1, 2): "tuple key"},
        bytearray(b"ab"),
        2**64,
        {1, 2},
        Item("x", ("a", "b")),
        ValueError("boom"),
        lambda x: x + 1,
    ],
)
def test_anything_else_falls_back_to_cloudpickle_and_keeps_its_type(value: Any) -> None:
    fmt, data = encode_value(value)
    assert fmt == FORMAT_PICKLE
    decoded = decode_value(fmt, data)
    assert type(decoded) is type(value)
    if callable(value) and not isinstance(value, type):
        if not isinstance(value, BaseException):
            assert decoded(1) == 2
    elif isinstance(value, BaseException):
        assert decoded.args == value.args
    else:
        assert decoded == value


def test_an_unserialisable_value_raises_a_clear_error_naming_what_and_why() -> None:
    with pytest.raises(SerializationError) as caught:
        encode_value({"lock": threading.Lock()}, what="argument 0 of f")
    message = str(caught.value)
    assert "argument 0 of f" in message
    assert "dict" in message
    assert "lock" in message


def test_call_arguments_round_trip_with_tuples_kept_as_tuples() -> None:
    fmt, data = encode_call_args((1, "a"), {"k": [1]})
    assert fmt == FORMAT_MSGPACK
    assert decode_call_args(fmt, data) == ((1, "a"), {"k": [1]})
    fmt, data = encode_call_args(((1, 2),), {})
    assert decode_call_args(fmt, data) == (((1, 2),), {})


def test_garbage_values_raise_deserialization_errors() -> None:
    with pytest.raises(DeserializationError):
        decode_value(FORMAT_PICKLE, b"not a pickle")
    with pytest.raises(DeserializationError, match="unknown format"):
        decode_value(7, b"")
    with pytest.raises(DeserializationError, match="args, kwargs"):
        decode_call_args(FORMAT_MSGPACK, packb({"not": "a pair"}))


def test_envelopes_round_trip_with_their_seal() -> None:
    envelope = Envelope("calls", b"body", key_id="k1", expires_at=123, signature=b"\x01" * 32)
    assert unpack_envelope(envelope.pack()) == envelope
    assert unpack_envelope(Envelope("results", b"").pack()).signature is None


def test_an_envelope_of_another_version_is_refused() -> None:
    with pytest.raises(VersionMismatchError):
        unpack_envelope(packb([99, "calls", None, 0, None, b""]))
    with pytest.raises(VersionMismatchError):
        unpack_envelope(packb([1, "calls", None, None, b""]))  # Step 1's unsigned layout


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1garbage",
        packb("a string"),
        packb([2, "calls", None, 0, None]),
        packb([2, 5, None, 0, None, b""]),
        packb([2, "calls", 3, 0, None, b""]),
        packb([2, "calls", None, "soon", None, b""]),
        packb([]),
    ],
)
def test_malformed_envelopes_are_refused(data: bytes) -> None:
    with pytest.raises(DeserializationError, match="malformed"):
        unpack_envelope(data)


def test_an_oversized_envelope_is_refused_before_parsing() -> None:
    with pytest.raises(DeserializationError, match="exceeds the limit"):
        unpack_envelope(Envelope("calls", b"x" * 100).pack(), max_size=50)
