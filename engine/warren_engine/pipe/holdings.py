"""The messages a container holds, in memory its engine can still read once it died.

The crash ledger (:mod:`warren_engine.pool.crash_ledger`) must know which messages a container held
when it died. Reporting each message over the container's pipe as it is taken and as
it is settled cost two pipe messages, two system calls and an engine wake-up per
message. Instead the engine gives every container a small table of shared memory (a
``multiprocessing.RawArray``, passed to the forked process like its pipes): the
container writes a message's key into a free slot before it runs any of its inputs,
and zeroes the slot before it acknowledges the message. Nothing crosses a process
boundary on the hot path; the engine reads the table when it must know (a
redelivered message's verdict, the container's exit). Writes a killed process made
are in the shared pages whatever killed it.

A key is 16 bytes: the message id itself when it is a UUID in hex (what Warren's
publishers send), else a hash of it. An all-zero slot is free. A container whose
table is full does not take a message (it goes back to the queue); the table is
sized so that this does not happen in practice.
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
from typing import Any

KEY_BYTES = 16
_EMPTY = bytes(KEY_BYTES)
_CONTEXT = multiprocessing.get_context("forkserver")


def key(message_id: str) -> bytes:
    """The 16-byte key of a message id."""
    if len(message_id) == 2 * KEY_BYTES:
        try:
            raw = bytes.fromhex(message_id)
        except ValueError:
            pass
        else:
            if raw != _EMPTY:
                return raw
    return hashlib.blake2b(message_id.encode(), digest_size=KEY_BYTES).digest()


def slots_for(max_inputs: int) -> int:
    """Slots for a container of ``max_inputs``: several times what its prefetch allows."""
    return 4 * max_inputs + 64


class HoldingTable:
    """A container's table of held messages, shared between it and its engine."""

    def __init__(self, slots: int, shared: Any = None) -> None:
        self.slots = slots
        self.shared = (
            shared if shared is not None else _CONTEXT.RawArray(ctypes.c_char, slots * KEY_BYTES)
        )
        self._view = memoryview(self.shared).cast("B")  # writes through it are plain copies
        self._free = list(range(slots - 1, -1, -1))

    # -- the container's side ------------------------------------------------------------

    def hold(self, message_id: str) -> int | None:
        """Record a message as held; its slot, or None if the table is full."""
        if not self._free:
            return None
        slot = self._free.pop()
        offset = slot * KEY_BYTES
        self._view[offset : offset + KEY_BYTES] = key(message_id)
        return slot

    def release(self, slot: int) -> None:
        offset = slot * KEY_BYTES
        self._view[offset : offset + KEY_BYTES] = _EMPTY
        self._free.append(slot)

    def clear(self) -> None:
        """Nothing is held any more (the connection that delivered it all is gone)."""
        self._view[:] = bytes(self.slots * KEY_BYTES)
        self._free = list(range(self.slots - 1, -1, -1))

    # -- the engine's side ---------------------------------------------------------------

    def holds(self, held: bytes) -> bool:
        """Whether the message with this key is held now."""
        raw = self._view.tobytes()
        start = 0
        while (found := raw.find(held, start)) >= 0:
            if found % KEY_BYTES == 0:
                return True
            start = found + 1
        return False

    def held(self) -> set[bytes]:
        """Keys of the messages held now."""
        raw = self._view.tobytes()
        found = set()
        for offset in range(0, len(raw), KEY_BYTES):
            entry = raw[offset : offset + KEY_BYTES]
            if entry != _EMPTY:
                found.add(entry)
        return found
