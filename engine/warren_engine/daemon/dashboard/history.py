"""What the pools looked like over the last minutes: the dashboard's chart.

Every ``PERIOD`` seconds the dashboard records every pool's stats in a *frame*; the
newest ``WINDOW`` seconds of frames are kept (a ring: memory does not grow with time).
A chart's points come from consecutive frames: queue depth, inputs running and
containers as they were, and the throughput as the inputs the pool's containers took
per second since the frame before (from ``inputs_received``; a pool that restarted
its count, after a redeploy, counts from zero). A pool's figures are summed over every
pool when no pool is named.

This module does no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from warren.wire.control import PoolStats

PERIOD = 2.0  # seconds between frames
WINDOW = 600.0  # seconds of frames kept

PoolRef = tuple[str, str, str]
"""A pool: its environment, its app's instance, and its key (a function or a variant)."""


@dataclass(frozen=True, slots=True)
class Sample:
    queued: int
    running: int
    containers: int
    received: int  # inputs the pool's containers took since the pool started


@dataclass(frozen=True, slots=True)
class Frame:
    time: float
    pools: Mapping[PoolRef, Sample]


@dataclass(frozen=True, slots=True)
class Point:
    time: float
    queued: int
    running: int
    containers: int
    rate: float  # inputs taken per second since the previous frame

    def as_dict(self) -> dict[str, float]:
        return {
            "t": round(self.time, 3),
            "queued": self.queued,
            "running": self.running,
            "containers": self.containers,
            "rate": round(self.rate, 3),
        }


def _taken(before: Sample | None, after: Sample) -> int:
    if before is None:
        return 0  # a pool new in this frame: nothing to compare with
    if after.received < before.received:
        return after.received  # the pool was made again: its count starts from zero
    return after.received - before.received


class History:
    def __init__(self, window: float = WINDOW, period: float = PERIOD) -> None:
        self.window = window
        self.period = period
        self._frames: deque[Frame] = deque(maxlen=math.ceil(window / period) + 1)

    def record(self, now: float, pools: Mapping[PoolRef, PoolStats]) -> None:
        """A frame of these pools' stats at ``now`` (pools whose node did not answer,
        ``error`` set, are left out of it)."""
        samples = {
            ref: Sample(s.queued_inputs, s.running_inputs, s.containers, s.inputs_received)
            for ref, s in pools.items()
            if s.error is None
        }
        self._frames.append(Frame(now, samples))

    def points(self, pool: PoolRef | None = None) -> tuple[Point, ...]:
        """The chart of one pool, or of every pool summed (``None``), oldest first."""
        frames = self._frames
        return tuple(
            self._point(before, after, pool) for before, after in itertools.pairwise(frames)
        )

    @staticmethod
    def _point(before: Frame, after: Frame, pool: PoolRef | None) -> Point:
        refs: Iterable[PoolRef] = after.pools if pool is None else [pool]
        queued = running = containers = taken = 0
        for ref in refs:
            sample = after.pools.get(ref)
            if sample is None:
                continue
            queued += sample.queued
            running += sample.running
            containers += sample.containers
            taken += _taken(before.pools.get(ref), sample)
        elapsed = after.time - before.time
        return Point(
            after.time, queued, running, containers, taken / elapsed if elapsed > 0 else 0.0
        )
