"""Secrets in the registry, readable only by those who hold the signing key.

``warren secret create`` may reach any engine node, and every node's containers may
need the secret, so a secret travels in its environment's registry stream like an app
(:mod:`warren_engine.cluster.entries`), and each node keeps its values in its own
secret store (:mod:`warren_engine.daemon.secret_store`). Anyone who can read the stream
must not read the values: they are sealed with AES-GCM under a key derived (HKDF-SHA256)
from the key every node already shares to sign messages (``WARREN_SECRET_KEY``), with
the environment and the secret's name as associated data, so a sealed value cannot be
moved to another secret. The ``cryptography`` package does the cryptography.

The stream keeps what was appended: a secret changed or deleted stays, sealed, in its
history. Rotating the signing key makes old entries unreadable, which is what it is for.
"""

from __future__ import annotations

import os

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from warren.exceptions import DeserializationError

NONCE_BYTES = 12
INFO = b"warren secrets v1"


class SecretSealer:
    def __init__(self, signing_key: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=INFO).derive(signing_key)
        self._aead = AESGCM(key)

    def seal(self, environment: str, name: str, values: dict[str, str]) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, orjson.dumps(values), _bound(environment, name))

    def open(self, environment: str, name: str, sealed: bytes) -> dict[str, str]:
        """The values, or ``DeserializationError`` (another key, or moved, or altered)."""
        nonce, data = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            plain = self._aead.decrypt(nonce, data, _bound(environment, name))
        except InvalidTag:
            raise DeserializationError(
                f"secret {name!r} of {environment!r} cannot be opened with this node's key"
            ) from None
        values = orjson.loads(plain)
        if not isinstance(values, dict):
            raise DeserializationError(f"secret {name!r} of {environment!r} is malformed")
        return {str(key): str(value) for key, value in values.items()}


def _bound(environment: str, name: str) -> bytes:
    return orjson.dumps([environment, name])
