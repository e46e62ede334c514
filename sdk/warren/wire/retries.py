"""``Retries``: how often, and how far apart, a failed input runs again.

Retries happen on the engine side: a container whose input failed (raised, or ran
past its timeout) with attempts left sends it to a delay queue that dead-letters it
back to the function's queue after the backoff, so a spawned call retries without
its caller and no container waits out the delay. Pure; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warren.exceptions import InvalidError

MAX_RETRIES = 100


def _number(name: str, value: Any, low: float, high: float | None = None) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < low:
        raise InvalidError(f"{name} must be a number >= {low:g}, got {value!r}")
    if high is not None and value > high:
        raise InvalidError(f"{name} must be at most {high:g}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Retries:
    """Retry policy of a function: ``@app.function(retries=warren.Retries(3, initial_delay=2))``.

    Attempt ``n + 1`` starts ``initial_delay * backoff_coefficient ** (n - 1)`` seconds
    (at most ``max_delay``) after attempt ``n`` failed; ``retries=2`` is
    ``Retries(max_retries=2)``: three attempts in all, one second, then two, apart. The
    caller sees the last attempt's exception.

    Example::

        @app.function(retries=warren.Retries(max_retries=4, backoff_coefficient=3.0))
        def fetch(url: str) -> bytes: ...
    """

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        value = self.max_retries
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RETRIES:
            raise InvalidError(
                f"max_retries must be an integer from 0 to {MAX_RETRIES}, got {value!r}"
            )
        _number("backoff_coefficient", self.backoff_coefficient, 1.0, 10.0)
        _number("initial_delay", self.initial_delay, 0.0, 3600.0)
        _number("max_delay", self.max_delay, 0.0, 3600.0)

    @classmethod
    def coerce(cls, value: int | Retries | None) -> Retries:
        """``None`` (no retries), an ``int`` (that many, default backoff) or a ``Retries``."""
        if value is None:
            return cls(0)
        if isinstance(value, Retries):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(value)
        raise InvalidError(f"retries must be an int or warren.Retries, got {value!r}")

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next attempt, after ``failures`` failed attempts."""
        if failures < 1:
            return 0.0
        return float(
            min(self.max_delay, self.initial_delay * self.backoff_coefficient ** (failures - 1))
        )
