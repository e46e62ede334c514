"""``FunctionSpec``: how one function runs, as the engine needs to know it.

A spec travels from the client (built from the function's options, which
:mod:`warren.options` declares and turns into spec fields) to the engine, which sizes
and feeds the function's containers by it. A *variant* (``with_options``) is a spec
with some fields overridden; its name is a hash of those overrides, the same on every
machine. Pure; no I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Self

from warren.exceptions import InvalidError
from warren.wire.codec import packb
from warren.wire.protocol import WIRE_VERSION
from warren.wire.retries import Retries

VARIANT_CHARS = 12
# The spec fields a variant may change: the engine refuses overrides of any other (the
# function's identity, its inputs per container and its warm pool are fixed per deploy).
OVERRIDABLE = frozenset(
    {"max_containers", "buffer_containers", "scaledown_window", "timeout"}
    | {"max_retries", "backoff_coefficient", "initial_delay", "max_delay"}
    | {"cpu", "memory", "gpu", "env", "secrets", "volumes", "region", "cloud"}
)


def check_autoscaling(
    min_containers: Any, max_containers: Any, buffer_containers: Any, scaledown_window: Any
) -> None:
    """Raise ``InvalidError`` unless these autoscaler settings make sense together."""
    values = {
        "min_containers": min_containers,
        "max_containers": max_containers,
        "buffer_containers": buffer_containers,
    }
    for name, value in values.items():
        if name == "max_containers" and value is None:
            continue  # the default: as many as the engine node has cores
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidError(f"{name} must be a non-negative integer, got {value!r}")
    if max_containers is None:
        pass
    elif max_containers < 1:
        raise InvalidError(f"max_containers must be at least 1, got {max_containers}")
    elif min_containers > max_containers:
        raise InvalidError(
            f"min_containers ({min_containers}) cannot exceed max_containers ({max_containers})"
        )
    window = scaledown_window
    if not isinstance(window, int | float) or isinstance(window, bool) or window < 0:
        raise InvalidError(f"scaledown_window must be >= 0 seconds, got {window!r}")


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """How one function runs: what the engine needs to size and feed its containers."""

    tag: str
    is_async: bool
    # None: as many containers as the engine node has cores (see default_max_containers).
    max_containers: int | None = None
    max_inputs: int = 1
    timeout: float = 300.0
    min_containers: int = 0
    buffer_containers: int = 0
    scaledown_window: float = 60.0
    max_retries: int = 0
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0
    # Resources and placement (see warren.options): [request, limit] pairs, labels, mounts.
    cpu: list[float | None] | None = None
    memory: list[int | None] | None = None
    gpu: str | None = None
    env: dict[str, str | None] = field(default_factory=dict, repr=False)
    secrets: list[dict[str, Any]] = field(default_factory=list, repr=False)  # values: never shown
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    region: list[str] = field(default_factory=list)
    cloud: list[str] = field(default_factory=list)
    # Set on a variant made by with_options: the name its queue and pool carry.
    variant: str | None = None
    # Set for a web endpoint (warren.web): its method and parameters.
    web: dict[str, Any] | None = None
    version: int = WIRE_VERSION

    @property
    def retries(self) -> Retries:
        return Retries(
            self.max_retries, self.backoff_coefficient, self.initial_delay, self.max_delay
        )

    def __post_init__(self) -> None:
        _ = self.retries  # validates the retry policy
        for name in ("max_containers", "max_inputs"):
            value = getattr(self, name)
            if name == "max_containers" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidError(f"{name} must be a positive integer, got {value!r}")
        check_autoscaling(
            self.min_containers, self.max_containers, self.buffer_containers, self.scaledown_window
        )
        timeout = self.timeout
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise InvalidError(
                f"timeout must be a positive number of seconds, got {self.timeout!r}"
            )

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_overrides(self, overrides: dict[str, Any]) -> Self:
        """The variant these overrides (checked by ``warren.options.check_options``) make."""
        if not overrides:
            return self
        refused = set(overrides) - OVERRIDABLE
        if refused:
            raise InvalidError(f"options that cannot be overridden: {sorted(refused)}")
        return dataclasses.replace(self, **overrides, variant=variant_name(overrides))


def variant_name(overrides: dict[str, Any]) -> str:
    """The name of the variant these overrides make (stable across processes)."""
    canonical = packb(sorted((key, _canonical(value)) for key, value in overrides.items()))
    return "v" + hashlib.sha256(canonical).hexdigest()[: VARIANT_CHARS - 1]


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return sorted((k, _canonical(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def parse_gpu(value: Any) -> tuple[str, int] | None:
    """``"any"``, ``"H100"``, ``"A100:2"`` as ``(kind, count)``; None for no GPU."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidError(f"gpu must be a string like 'any', 'H100' or 'A100:2', got {value!r}")
    kind, _, count = value.partition(":")
    if not kind or (count and (not count.isdigit() or int(count) < 1)):
        raise InvalidError(f"gpu must be a string like 'any', 'H100' or 'A100:2', got {value!r}")
    return kind.upper() if kind.lower() != "any" else "any", int(count or 1)
