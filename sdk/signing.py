"""Signing every message, and checking a message before anything in it is decoded.

Anyone who can publish a pickle to a queue can run code where it is unpickled, so
every envelope Warren sends carries an HMAC-SHA256 over its version, kind, key id,
expiry and body, made with a secret key that clients, engines and containers share.
A reader checks, in this order and before looking inside the body: the size, the
structure, the key id, the signature, then the expiry. Whatever fails raises
:class:`~sdk.exceptions.MessageRejectedError` with the reason.

The key comes from ``WARREN_SECRET_KEY``, else from the file named by
``WARREN_SECRET_KEY_FILE``, else from ``~/.config/warren/secret-key`` (or under
``$XDG_CONFIG_HOME``), which is created with a random key, readable by its owner only,
the first time it is needed: every process of one user on one machine then shares a
key with no set-up. Several machines must be given the same key explicitly.
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

from sdk.codec import Envelope, unpack_envelope
from sdk.config import settings
from sdk.exceptions import DeserializationError, InvalidError, MessageRejectedError

MIN_KEY_BYTES = 16
KEY_ID_CHARS = 12
# Control messages carry an app's code, which may be larger than any call or result.
CONTROL_MAX_SIZE = 64 * 1024 * 1024
# Room a sealed envelope and a batch's own fields take besides its values.
ENVELOPE_OVERHEAD = 1024


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "warren" / "secret-key"


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


def load_key() -> bytes:
    """The shared secret key, from the environment, a key file, or the default file."""
    raw = os.environ.get("WARREN_SECRET_KEY")
    if raw:
        return _check(raw.encode(), "WARREN_SECRET_KEY")
    named = os.environ.get("WARREN_SECRET_KEY_FILE")
    return _key_from_file(Path(named) if named else default_key_file(), bool(named))


@functools.lru_cache(maxsize=8)
def _key_from_file(path: Path, named: bool) -> bytes:
    if not named and not path.exists():
        _create_key_file(path)
    source = f"WARREN_SECRET_KEY_FILE ({path})" if named else str(path)
    return _check(_read_key_file(path), source)


class Signer:
    """Seals envelopes with one key and opens (verifies) envelopes sealed with it."""

    def __init__(self, key: bytes, max_size: int, expiry: float) -> None:
        self._key = key
        self.key_id = hashlib.sha256(b"warren-key-id:" + key).hexdigest()[:KEY_ID_CHARS]
        self.max_size = max_size
        self.expiry = expiry

    def _mac(self, envelope: Envelope) -> bytes:
        mac = hmac.new(self._key, envelope.header(), hashlib.sha256)
        mac.update(envelope.body)
        return mac.digest()

    def seal(self, envelope: Envelope, *, valid_for: float | None = None) -> bytes:
        """The envelope as bytes, signed, valid for ``valid_for`` seconds (default expiry)."""
        lifetime = self.expiry if valid_for is None else max(valid_for, self.expiry)
        unsigned = Envelope(
            envelope.kind, envelope.body, self.key_id, int(time.time() + lifetime) + 1
        )
        return Envelope(
            unsigned.kind,
            unsigned.body,
            unsigned.key_id,
            unsigned.expires_at,
            self._mac(unsigned),
        ).pack()

    def open(
        self, data: bytes, *, max_size: int | None = None, now: float | None = None
    ) -> Envelope:
        """Parse and verify ``data``; raise ``MessageRejectedError`` saying what is wrong."""
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
        if not hmac.compare_digest(envelope.signature, self._mac(envelope)):
            raise MessageRejectedError("rejected: the signature does not match (tampered with?)")
        if envelope.expires_at < (time.time() if now is None else now):
            raise MessageRejectedError(
                f"rejected: the message expired at {time.ctime(envelope.expires_at)}"
            )
        return envelope


@functools.lru_cache(maxsize=8)
def _signer(key: bytes, max_size: int, expiry: float) -> Signer:
    return Signer(key, max_size, expiry)


def signer() -> Signer:
    """The signer for this process's current settings (cheap: cached by key and limits)."""
    config = settings()
    return _signer(load_key(), config.max_message_size, config.message_expiry)
