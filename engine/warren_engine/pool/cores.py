"""Which core each single-slot sync container runs on.

A container that runs a sync function with one slot has two threads that take turns:
its event loop hands an input to the worker thread, which hands the result back. On
a virtual machine, waking a thread that sleeps on another (idle) core costs an
inter-processor interrupt, several times the cost of the hand-off itself; two threads
on one core hand over in a plain context switch (on this machine a ping-pong between
two threads took 65 µs across cores and 16 µs on one). So the engine gives each such
container a core of its own choosing, and the container keeps all its threads there.
The choice spreads each function's containers first, then all of them: containers of
one function are the ones busy together (a CPU-bound map keeps them all busy, and two
of them on one core would run it at half speed while another core idles with some
other function's idle containers). When containers exit and the loads drift apart, it
moves one from the busiest core to the idlest, never onto a core that already runs a
container of the same function while another core runs none. Containers of async
functions (one thread), of several slots (threads that may run C code in parallel) and
with a CPU limit (their own affinity) are left to the kernel's scheduler.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from warren.wire.spec import FunctionSpec


def pinnable(spec: FunctionSpec) -> bool:
    """Whether containers of ``spec`` get a core of their own."""
    limited = spec.cpu is not None and spec.cpu[1] is not None
    return not spec.is_async and spec.max_inputs == 1 and not limited


def pin_process(pid: int, core: int) -> None:
    """Put every thread of process ``pid`` on ``core`` (a thread's affinity is its own)."""
    try:
        ids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    except FileNotFoundError:
        return  # it has exited (a container stopping as its neighbour moves)
    except OSError:
        ids = [pid]  # no /proc here: the process alone
    for thread in ids:
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            os.sched_setaffinity(thread, {core})


class CorePlacement:
    """The node's cores and the pinned containers on each (keyed by container id), with
    the function (group) each container runs."""

    def __init__(self, cores: list[int] | None = None) -> None:
        allowed = sorted(os.sched_getaffinity(0)) if cores is None else cores
        self._load: dict[int, set[str]] = {core: set() for core in allowed}
        self._groups: dict[str, str] = {}
        self._pids: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return len(self._load) > 1

    def _same_group(self, core: int, group: str) -> int:
        return sum(1 for held in self._load[core] if self._groups.get(held) == group)

    def take(self, container: str, group: str = "") -> int:
        """The core for a new container: the one with the fewest containers of its group,
        then the fewest of all."""
        core = min(self._load, key=lambda c: (self._same_group(c, group), len(self._load[c]), c))
        self._load[core].add(container)
        self._groups[container] = group
        return core

    def started(self, container: str, pid: int) -> None:
        self._pids[container] = pid

    def give(self, container: str) -> None:
        """The container is gone; if the loads drifted apart, one moves to the idlest core."""
        self._pids.pop(container, None)
        for holders in self._load.values():
            holders.discard(container)
        self._groups.pop(container, None)
        busiest = max(self._load, key=lambda c: len(self._load[c]))
        idlest = min(self._load, key=lambda c: len(self._load[c]))
        if len(self._load[busiest]) - len(self._load[idlest]) < 2:
            return
        # One whose function the idlest core does not run already (or runs less there).
        moving = min(
            self._load[busiest],
            key=lambda held: (
                self._same_group(idlest, self._groups.get(held, ""))
                - self._same_group(busiest, self._groups.get(held, "")),
                held,
            ),
        )
        group = self._groups.get(moving, "")
        if self._same_group(idlest, group) >= self._same_group(busiest, group):
            return  # moving it would stack its function on one core: leave them
        self._load[busiest].discard(moving)
        self._load[idlest].add(moving)
        if moving in self._pids:
            pin_process(self._pids[moving], idlest)

    def where(self, container: str) -> int | None:
        """The core a container is placed on (None if it is not placed)."""
        return next((core for core, held in self._load.items() if container in held), None)

    def loads(self) -> dict[int, int]:
        return {core: len(holders) for core, holders in self._load.items()}
