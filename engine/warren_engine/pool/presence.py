"""What one engine node runs of one pool, as its heartbeat tells the other nodes
(:mod:`warren_engine.cluster.membership`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PoolBeat:
    """What one node runs of one pool (by its function queue)."""

    queue: str
    containers: int
    running: int
    held: int
    pids: tuple[int, ...] = ()
