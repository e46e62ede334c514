"""Signing every message, and checking a message before anything in it is decoded.

Anyone who can publish a pickle to a queue can run code where it is unpickled, so
every envelope Warren sends carries an HMAC-SHA256 over its version, kind, key id,
expiry and body, made with a secret key that clients, engines and containers share.
A reader checks, in this order and before looking inside the body: the size, the
structure, the key id, the signature, then the expiry. Whatever fails raises
:class:`~warren.exceptions.MessageRejectedError` with the reason.

The key comes from ``WARREN_SECRET_KEY``, else from the file named by
``WARREN_SECRET_KEY_FILE``, else from ``~/.config/warren/secret-key`` (or under
``$XDG_CONFIG_HOME``; all three read by :mod:`warren.config`), which is created with a
random key, readable by its owner only, the first time it is needed: every process of
one user on one machine then shares a key with no set-up. Several machines must be
given the same key explicitly.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Any

from warren.config import Settings, settings
from warren.exceptions import DeserializationError, InvalidError, MessageRejectedError
from warren.wire import naming
from warren.wire.codec import Envelope, packb, unpack_envelope

MIN_KEY_BYTES = 16
KEY_ID_CHARS = 12
# Control messages carry an app's code, which may be larger than any call or result.
CONTROL_MAX_SIZE = 64 * 1024 * 1024
# Room a sealed envelope and a batch's own fields take besides its values.
ENVELOPE_OVERHEAD = 1024
# A spawned call's result is kept as long as its queue keeps it (x-message-ttl); the
# signature of what is put there must not expire first, whatever retention was chosen.
CALL_RESULT_VALIDITY = 366 * 24 * 3600.0
# Bodies up to this size are signed in one call (copied once); larger ones in a stream.
ONE_SHOT_BYTES = 64 * 1024


def default_key_file(config: Settings) -> Path:
    return config.config_dir / "secret-key"


def _create_key_file(path: Path) -> None:
    """Write a new random key to ``path`` unless another process got there first."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(temporary, path)  # atomic, and never replaces an existing file
    finally:
        temporary.unlink(missing_ok=True)


def _read_key_file(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise InvalidError(f"cannot read the secret key file {str(path)!r}: {exc}") from exc
    return key


def _check(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise InvalidError(
            f"the secret key from {source} is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
            "(for example `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return key


def load_key(config: Settings | None = None) -> bytes:
    """The shared secret key (of ``config``, default the process's settings): the
    key itself, a key file, or the default file."""
    config = config or settings()
    if config.secret_key:
        return _check(config.secret_key.encode(), "WARREN_SECRET_KEY")
    named = config.secret_key_file
    return _key_from_file(named or default_key_file(config), named is not None)


@functools.lru_cache(maxsize=8)
def _key_from_file(path: Path, named: bool) -> bytes:
    if not named and not path.exists():
        _create_key_file(path)
    source = f"WARREN_SECRET_KEY_FILE ({path})" if named else str(path)
    return _check(_read_key_file(path), source)


class MessageExpiredError(MessageRejectedError):
    """A genuine message (the signature checks out) that is past its expiry: its sender
    can still be answered, unlike a forgery's."""

    def __init__(self, message: str, envelope: Envelope) -> None:
        super().__init__(message)
        self.envelope = envelope


class Signer:
    """Seals envelopes with one key and opens (verifies) envelopes sealed with it."""

    def __init__(self, key: bytes, max_size: int, expiry: float) -> None:
        self._key = key
        self.key_id = hashlib.sha256(b"warren-key-id:" + key).hexdigest()[:KEY_ID_CHARS]
        self.max_size = max_size
        self.expiry = expiry

    def _mac(self, envelope: Envelope, reply_to: str | None, correlation_id: str | None) -> bytes:
        signed = envelope.header() + packb([reply_to, correlation_id])
        if len(envelope.body) <= ONE_SHOT_BYTES:  # OpenSSL's one-shot HMAC, in one C call
            return hmac.digest(self._key, signed + envelope.body, "sha256")
        mac = hmac.new(self._key, signed, hashlib.sha256)  # not copied: a large body
        mac.update(envelope.body)
        return mac.digest()

    def seal(
        self,
        envelope: Envelope,
        *,
        valid_for: float | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        expires_at: int | None = None,
    ) -> bytes:
        """The envelope as bytes, signed, valid for ``valid_for`` seconds (default expiry),
        or until ``expires_at`` (a message put back keeps the expiry it came with).

        The signature also covers the AMQP ``reply_to`` and ``correlation_id`` the message
        will carry: a captured call cannot be replayed with its answers sent elsewhere.
        """
        if expires_at is None:
            lifetime = self.expiry if valid_for is None else max(valid_for, self.expiry)
            expires_at = int(time.time() + lifetime) + 1
        unsigned = Envelope(envelope.kind, envelope.body, self.key_id, expires_at)
        return Envelope(
            unsigned.kind,
            unsigned.body,
            unsigned.key_id,
            unsigned.expires_at,
            self._mac(unsigned, reply_to, correlation_id),
        ).pack()

    def open_message(self, message: Any, **checks: Any) -> Envelope:
        """:meth:`open` an incoming AMQP message, with the properties it came with."""
        return self.open(
            message.body,
            reply_to=message.reply_to,
            correlation_id=message.correlation_id,
            **checks,
        )

    def open(
        self,
        data: bytes,
        *,
        max_size: int | None = None,
        now: float | None = None,
        kind: str | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
    ) -> Envelope:
        """Parse and verify ``data`` (of ``kind``, if given, sent with this ``reply_to`` and
        ``correlation_id``); raise ``MessageRejectedError`` saying what is wrong."""
        limit = self.max_size if max_size is None else max_size
        try:
            envelope = unpack_envelope(data, max_size=limit)
        except DeserializationError as exc:
            raise MessageRejectedError(f"rejected: {exc}") from exc
        if envelope.signature is None or envelope.key_id is None:
            raise MessageRejectedError("rejected: the message is not signed")
        if envelope.key_id != self.key_id:
            raise MessageRejectedError(
                f"rejected: signed with key {envelope.key_id!r}, and this side has key "
                f"{self.key_id!r} (set the same WARREN_SECRET_KEY everywhere)"
            )
        expected = self._mac(envelope, reply_to, correlation_id)
        if not hmac.compare_digest(envelope.signature, expected):
            raise MessageRejectedError("rejected: the signature does not match (tampered with?)")
        if kind is not None and envelope.kind != kind:
            raise MessageRejectedError(
                f"rejected: a {envelope.kind!r} message where {kind!r} belongs"
            )
        if envelope.expires_at < (time.time() if now is None else now):
            raise MessageExpiredError(
                f"rejected: the message expired at {time.ctime(envelope.expires_at)}", envelope
            )
        return envelope


@functools.lru_cache(maxsize=8)
def _signer(key: bytes, max_size: int, expiry: float) -> Signer:
    return Signer(key, max_size, expiry)


def signer(config: Settings | None = None) -> Signer:
    """The signer for ``config`` (default: the process's settings); cheap, cached by key
    and limits."""
    config = config or settings()
    return _signer(load_key(config), config.max_message_size, config.message_expiry)


def result_validity(reply_to: str) -> float | None:
    """How long results sent to ``reply_to`` stay valid: a stored (spawned) call's for as
    long as its queue may keep them, a waiting caller's for the default expiry (None)."""
    return CALL_RESULT_VALIDITY if naming.is_call_queue(reply_to) else None
