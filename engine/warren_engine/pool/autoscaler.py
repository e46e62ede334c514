"""The autoscaler's decision, as a pure function of what a pool sees.

For one function (or variant)::

    load    = inputs queued + inputs running
    desired = clamp(min_containers, max_containers,
                    ceil(load / max_inputs) + (buffer_containers if load else 0))

Below ``desired`` the pool starts containers at once. Above ``max_containers`` (after
``update_autoscaler`` lowered it) it stops the extras, idle ones first; a busy one
finishes its current inputs before it exits. Otherwise an idle container above the
larger of ``desired`` and ``min_containers`` stops once it has been idle for
``scaledown_window`` seconds. No I/O here: the pool feeds it and acts on the answer.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Self

from warren.exceptions import InvalidError
from warren.wire.control import AutoscalerSettings
from warren.wire.spec import check_autoscaling

AUTOSCALER_FIELDS = ("min_containers", "max_containers", "buffer_containers", "scaledown_window")


@dataclass(frozen=True, slots=True)
class Autoscaling:
    min_containers: int = 0
    max_containers: int = 1
    buffer_containers: int = 0
    scaledown_window: float = 60.0

    def __post_init__(self) -> None:
        check_autoscaling(
            self.min_containers, self.max_containers, self.buffer_containers, self.scaledown_window
        )

    def updated(self, changes: dict[str, Any]) -> Self:
        """A copy with ``changes`` applied (``None`` values keep the current setting)."""
        unknown = set(changes) - set(AUTOSCALER_FIELDS)
        if unknown:
            raise InvalidError(f"unknown autoscaler settings: {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_settings(self) -> AutoscalerSettings:
        """As control replies carry it (``update_autoscaler``, stats)."""
        return AutoscalerSettings(
            self.min_containers, self.max_containers, self.buffer_containers, self.scaledown_window
        )

    @classmethod
    def from_settings(cls, settings: AutoscalerSettings) -> Self:
        return cls(
            settings.min_containers,
            settings.max_containers,
            settings.buffer_containers,
            settings.scaledown_window,
        )


@dataclass(frozen=True, slots=True)
class ContainerView:
    """What the policy needs to know of one live container."""

    key: int
    running: int
    idle_for: float  # seconds since it last ran an input (0 while busy)
    stopping: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    start: int
    stop: tuple[int, ...]


def desired_containers(settings: Autoscaling, max_inputs: int, queued: int, running: int) -> int:
    load = max(0, queued) + max(0, running)
    wanted = math.ceil(load / max_inputs) + (settings.buffer_containers if load else 0)
    return max(settings.min_containers, min(settings.max_containers, wanted))


def decide(
    settings: Autoscaling,
    max_inputs: int,
    queued: int,
    containers: list[ContainerView],
    starting: int = 0,
) -> Decision:
    """How many containers to start and which to stop, given the pool's state."""
    live = [c for c in containers if not c.stopping]
    running = sum(c.running for c in live)
    desired = desired_containers(settings, max_inputs, queued, running)
    count = len(live) + starting
    if count < desired:
        return Decision(start=desired - count, stop=())
    by_idleness = sorted(live, key=lambda c: (c.running > 0, -c.idle_for))
    stop: list[int] = []
    if count > settings.max_containers:
        stop = [c.key for c in by_idleness[: count - settings.max_containers]]
        count -= len(stop)
    floor = max(desired, settings.min_containers)
    for container in by_idleness:
        if count <= floor:
            break
        if container.key in stop:
            continue
        if container.running == 0 and container.idle_for >= settings.scaledown_window:
            stop.append(container.key)
            count -= 1
    return Decision(start=0, stop=tuple(stop))
