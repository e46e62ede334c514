"""Turning values and envelopes into bytes and back.

Two layers:

* **Values** (arguments, results): plain data (``None``, ``bool``, ``int`` within 64 bits,
  ``float``, ``str``, ``bytes``, and ``list``/``dict`` of those, exact types only) travels
  as msgpack, which any language can read and which is cheap; anything else (tuples,
  dataclasses, your own classes, ``bytearray``...) travels as cloudpickle so that it
  comes back as the same type. A value that neither can encode raises
  ``SerializationError`` naming what was being encoded.
* **Envelopes**: every message body is a msgpack array
  ``[version, kind, key_id, expires_at, signature, body]``. :mod:`warren.wire.signing` fills in
  and checks ``key_id``, ``expires_at`` (Unix seconds) and the HMAC ``signature``;
  ``version`` lets a reader refuse a message it cannot read. Parsing an envelope looks
  at its size and structure only, never inside ``body``.

This module does no I/O.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Final

import cloudpickle
import msgpack
import orjson

from warren.exceptions import DeserializationError, SerializationError, VersionMismatchError

FORMAT_MSGPACK: Final = 0
FORMAT_PICKLE: Final = 1
FORMAT_JSON: Final = 2  # results of web endpoint calls: never pickled

ENVELOPE_VERSION: Final = 2
PICKLE_PROTOCOL: Final = 5

_SCALARS: Final = frozenset({type(None), bool, int, float, str, bytes})


def _is_plain(value: Any) -> bool:
    """Whether msgpack carries ``value`` as it is (plain loops: this runs on every call)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is list:
        for item in value:  # noqa: SIM110 (all() over a generator costs twice as much here)
            if type(item) not in _SCALARS and not _is_plain(item):
                return False
        return True
    if kind is dict:
        for k, v in value.items():
            if type(k) not in _SCALARS and not _is_plain(k):
                return False
            if type(v) not in _SCALARS and not _is_plain(v):
                return False
        return True
    return False


def packb(value: Any) -> bytes:
    """msgpack with the settings Warren uses everywhere (bytes stay bytes)."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpackb(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode_value(value: Any, what: str = "value") -> tuple[int, bytes]:
    """Encode ``value`` as ``(format, bytes)``; ``what`` names it in error messages."""
    if _is_plain(value):
        try:
            return FORMAT_MSGPACK, packb(value)
        except (OverflowError, ValueError):
            pass  # e.g. an int wider than 64 bits: pickle keeps it exact
    try:
        return FORMAT_PICKLE, cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialise {what} of type {type(value).__qualname__}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def encode_json(value: Any, what: str = "value") -> bytes:
    """``value`` as JSON (orjson: dataclasses, datetimes and numpy arrays included)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:
        raise SerializationError(f"{what} cannot be sent as JSON: {exc}") from exc


def decode_value(fmt: int, data: bytes, what: str = "value") -> Any:
    """Inverse of :func:`encode_value`. Unpickling runs code: only call it on verified data."""
    try:
        if fmt == FORMAT_MSGPACK:
            return unpackb(data)
        if fmt == FORMAT_PICKLE:
            return pickle.loads(data)
        if fmt == FORMAT_JSON:
            return orjson.loads(data)
    except Exception as exc:
        raise DeserializationError(
            f"cannot deserialise {what}: {type(exc).__name__}: {exc}"
        ) from exc
    raise DeserializationError(f"cannot deserialise {what}: unknown format {fmt!r}")


def encode_call_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, bytes]:
    """Encode positional and keyword arguments of one call together."""
    return encode_value([list(args), kwargs], what="the call's arguments")


def decode_call_args(fmt: int, data: bytes) -> tuple[tuple[Any, ...], dict[str, Any]]:
    decoded = decode_value(fmt, data, what="the call's arguments")
    if not (isinstance(decoded, list) and len(decoded) == 2 and isinstance(decoded[1], dict)):
        raise DeserializationError("the call's arguments are not an [args, kwargs] pair")
    return tuple(decoded[0]), decoded[1]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message on the wire: what it is, its body (msgpack), and its seal."""

    kind: str
    body: bytes
    key_id: str | None = None
    expires_at: int = 0
    signature: bytes | None = None
    version: int = ENVELOPE_VERSION

    def header(self) -> bytes:
        """The signed fields other than the body, in a fixed encoding."""
        return packb([self.version, self.kind, self.key_id, self.expires_at])

    def pack(self) -> bytes:
        return packb(
            [self.version, self.kind, self.key_id, self.expires_at, self.signature, self.body]
        )


def unpack_envelope(data: bytes, *, max_size: int | None = None) -> Envelope:
    """Parse an envelope, refusing anything malformed before the body is looked at."""
    if max_size is not None and len(data) > max_size:
        raise DeserializationError(f"message of {len(data)} bytes exceeds the limit of {max_size}")
    try:
        parts = unpackb(data)
    except Exception as exc:
        raise DeserializationError(f"malformed envelope: {type(exc).__name__}: {exc}") from exc
    if not isinstance(parts, list) or not parts:
        raise DeserializationError("malformed envelope: expected a list of 6 fields")
    if parts[0] != ENVELOPE_VERSION:
        raise VersionMismatchError(
            f"envelope version {parts[0]!r} is not supported (this side speaks {ENVELOPE_VERSION})"
        )
    if len(parts) != 6:
        raise DeserializationError("malformed envelope: expected a list of 6 fields")
    version, kind, key_id, expires_at, signature, body = parts
    if (
        not isinstance(kind, str)
        or not isinstance(body, bytes)
        or not (key_id is None or isinstance(key_id, str))
        or not isinstance(expires_at, int)
        or isinstance(expires_at, bool)
        or not (signature is None or isinstance(signature, bytes))
    ):
        raise DeserializationError("malformed envelope: a field has the wrong type")
    return Envelope(kind, body, key_id, expires_at, signature, version)
