"""The entries of an environment's registry: what the engine nodes agree an app is.

Every change to the apps of an environment (a deploy, an ephemeral run registered, a
variant made, ``update_autoscaler``, a stop) is one entry appended to the environment's
registry stream (:mod:`warren_engine.cluster.registry_log`); every node reads the
stream in order and applies each entry to what it runs, so all nodes end in the same
state whichever node took the request. An entry is signed like every other message:
it carries the app's pickled code, which containers unpickle.

``AppPut`` is an app as it is now, whole (a redeploy is a new ``deployed_at``; the
same ``deployed_at`` with more specs or other overrides is a variant or an autoscaler
change of the same deploy). ``AppRemoved`` ends an app. ``SecretPut`` and
``SecretRemoved`` create, replace and delete a named secret, its values sealed.
``Synced`` carries no change: a node appends one when it starts and reads until it
finds it, to know that it has read everything that was there before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from warren.exceptions import DeserializationError
from warren.wire.codec import Envelope, packb, unpackb
from warren.wire.control import AutoscalerChanges, decode_fields, record_fields
from warren.wire.spec import FunctionSpec

ENTRY_VERSION: Final = 1
KIND_REGISTRY: Final = "registry"


@dataclass(frozen=True, slots=True)
class AppPut:
    KIND: ClassVar[str] = "app_put"
    entry_id: str
    environment: str
    app: str
    instance: str
    ephemeral: bool
    functions: tuple[FunctionSpec, ...]
    code: bytes = field(repr=False)
    sys_path: tuple[str, ...]
    overrides: dict[str, AutoscalerChanges]
    deployed_at: float
    lease: str | None = None
    node: str = ""  # the node that took the request (it answers the caller)


@dataclass(frozen=True, slots=True)
class AppRemoved:
    KIND: ClassVar[str] = "app_removed"
    entry_id: str
    environment: str
    instance: str
    deployed_at: float  # the deploy it ends (a later deploy of the same name stays)
    reason: str = "stopped"


@dataclass(frozen=True, slots=True)
class SecretPut:
    """A named secret, created or replaced; its values sealed
    (:mod:`warren_engine.cluster.sealed_secrets`)."""

    KIND: ClassVar[str] = "secret_put"
    entry_id: str
    environment: str
    name: str
    sealed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SecretRemoved:
    KIND: ClassVar[str] = "secret_removed"
    entry_id: str
    environment: str
    name: str


@dataclass(frozen=True, slots=True)
class Synced:
    KIND: ClassVar[str] = "synced"
    entry_id: str
    node: str


Entry = AppPut | AppRemoved | SecretPut | SecretRemoved | Synced
ENTRIES: Final[dict[str, type[Any]]] = {
    cls.KIND: cls for cls in (AppPut, AppRemoved, SecretPut, SecretRemoved, Synced)
}


def encode_entry(entry: Entry) -> Envelope:
    return Envelope(KIND_REGISTRY, packb([ENTRY_VERSION, entry.KIND, record_fields(entry)]))


def decode_entry(body: bytes) -> Entry:
    """The entry an envelope's body holds; ``DeserializationError`` if malformed."""
    try:
        version, kind, fields = unpackb(body)
    except (ValueError, TypeError) as exc:
        raise DeserializationError(f"malformed registry entry: {exc}") from exc
    if version != ENTRY_VERSION:
        raise DeserializationError(f"registry entry version {version!r} is not supported")
    cls: Any = ENTRIES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise DeserializationError(f"unknown registry entry {kind!r}")
    entry: Entry = decode_fields(cls, fields, f"registry entry {kind}")
    return entry
