"""The client-side output buffer of a map: reorders, deduplicates, and bounds memory.

Inputs are numbered as they are sent. ``sent`` minus ``yielded`` is what the map holds
(results waiting for an earlier index plus inputs still out), and the map stops
sending while it is at its window: a slow head-of-line input pauses new sends instead
of growing memory. A result for an index that is not out (never sent, or already
received) is a duplicate from a redelivery: it is dropped and counted.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

T = TypeVar("T")


class OutputBuffer(Generic[T]):
    """Results of one map, released in input order (``ordered``) or as they arrive."""

    def __init__(self, *, ordered: bool) -> None:
        self.ordered = ordered
        self.sent = 0
        self.yielded = 0
        self._out: set[int] = set()
        self._held: dict[int, T] = {}
        self._arrived: collections.deque[tuple[int, T]] = collections.deque()
        self._next = 0

    @property
    def holding(self) -> int:
        """Inputs sent whose results have not been released yet."""
        return self.sent - self.yielded

    @property
    def outstanding(self) -> int:
        """Inputs sent whose results have not arrived yet."""
        return len(self._out)

    def sent_index(self) -> int:
        """Record one more input sent; returns its index."""
        index = self.sent
        self._out.add(index)
        self.sent += 1
        return index

    def add(self, index: int, result: T) -> bool:
        """Accept a result; False if it is a duplicate or unknown (the client counts it)."""
        if index not in self._out:
            return False
        self._out.discard(index)
        if self.ordered:
            self._held[index] = result
        else:
            self._arrived.append((index, result))
        return True

    def release(self, limit: int | None = None) -> list[tuple[int, T]]:
        """Results that may be yielded now, in the order to yield them."""
        released: list[tuple[int, T]] = []
        if self.ordered:
            held = self._held
            while self._next in held and (limit is None or len(released) < limit):
                released.append((self._next, held.pop(self._next)))
                self._next += 1
        else:
            arrived = self._arrived
            while arrived and (limit is None or len(released) < limit):
                released.append(arrived.popleft())
        self.yielded += len(released)
        return released
