"""The work every system runs: the same pure-Python functions, defined once."""

from __future__ import annotations


def add(x: int, y: int) -> int:
    return x + y


def burn(rounds: int) -> int:
    """About ``rounds`` iterations of pure-Python arithmetic (no I/O, holds the GIL)."""
    total = 0
    for i in range(rounds):
        total += i * i % 7
    return total
