"""How many inputs a container holds and runs, now, in memory its engine reads at any time.

A container's status reports (:mod:`warren_engine.pipe.pipes`) are samples: sent a
few times a second, and only when something changed. Stats built from them lag by up
to a report period, so ``get_current_stats()`` asked right after a map ended could
still count the map's last inputs as running. Reporting every change over the pipe
would cost a system call and an engine wake-up per input. Instead the engine gives
each container four shared counters (a ``multiprocessing.RawArray``, passed to the
forked process like its holding table, :mod:`warren_engine.pipe.holdings`): its
executor writes the inputs held and running where they change, before an input's
result is handed to be published; the container counts the messages and inputs it
received as it takes each message; and the engine reads them when it is asked. A
caller that has all the results of a map therefore never sees their inputs counted
as running, and always sees them counted as received.

Each counter is one aligned 64-bit word written by plain stores, so a reader sees
either the old or the new value of each; they are read one after the other, and
``running`` is clamped to ``held`` so a reader between two writes never sees more
running than held.
"""

from __future__ import annotations

import ctypes
import multiprocessing
from typing import Any

_CONTEXT = multiprocessing.get_context("forkserver")
_HELD, _RUNNING, _MESSAGES, _INPUTS = range(4)


class LoadGauge:
    """A container's inputs held (running, or waiting for a slot) and running, and the
    messages and inputs it received since it started."""

    def __init__(self, shared: Any = None) -> None:
        self.shared = shared if shared is not None else _CONTEXT.RawArray(ctypes.c_int64, 4)
        self._view = memoryview(self.shared).cast("B").cast("q")

    def set(self, held: int, running: int) -> None:
        """The container's side: the counts now (called where they change)."""
        view = self._view
        view[_RUNNING] = running
        view[_HELD] = held

    def read(self) -> tuple[int, int]:
        """The engine's side: ``(held, running)`` as the container last wrote them."""
        view = self._view
        held = view[_HELD]
        return held, min(view[_RUNNING], held)

    def count_received(self, messages: int, inputs: int) -> None:
        """The container's side: it has received this many messages and inputs in all."""
        view = self._view
        view[_MESSAGES] = messages
        view[_INPUTS] = inputs

    def received(self) -> tuple[int, int]:
        """The engine's side: ``(messages, inputs)`` the container received in all."""
        view = self._view
        return view[_MESSAGES], view[_INPUTS]
