"""Resource limits put on a container process itself, before the function's code loads.

``cpu`` and ``memory`` are ``[request, limit]`` pairs (see :mod:`warren.options`).
Without a writable cgroup v2 hierarchy (the case for an engine inside a container),
the limits are: a CPU affinity of ``ceil(limit)`` cores, and ``RLIMIT_DATA`` (heap
and private writable mappings) at the memory limit, past which allocations fail and
Python raises ``MemoryError``; the container reports that to the caller as
``OutOfMemoryError``, which is not retried.
"""

from __future__ import annotations

import math
import os
import resource

MIB = 1024 * 1024


def apply_limits(cpu: list[float | None] | None, memory: list[int | None] | None) -> None:
    """In the container process, before the function's code loads."""
    if cpu is not None and cpu[1] is not None:
        allowed = sorted(os.sched_getaffinity(0))
        cores = max(1, min(len(allowed), math.ceil(cpu[1])))
        os.sched_setaffinity(0, allowed[:cores])
    if memory is not None and memory[1] is not None:
        limit = memory[1] * MIB
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
