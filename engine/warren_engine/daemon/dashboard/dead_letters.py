"""The dashboard's dead-letter panel: what sits in an environment's dead-letter queue.

The dashboard does not read the queue itself. It shows what a :class:`DeadLetterSource`
returns, a callable the engine gives it (the module of ``warren dead list``, which
reads the queue for the command line, is the one reader); with none, the panel says
that this engine has no reader to show. An entry is anything with the attributes of
:class:`DeadLetterEntry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


class DeadLetterEntry(Protocol):
    """One dead-lettered message, as the panel shows it."""

    @property
    def id(self) -> str:
        """What ``warren dead show ID`` takes."""
        ...

    @property
    def function(self) -> str:
        """The function (or queue) it was dead-lettered from."""
        ...

    @property
    def reason(self) -> str:
        """Why (the ``x-warren-reason`` header)."""
        ...

    @property
    def dead_lettered_at(self) -> float | None:
        """When, as a Unix time, if known."""
        ...


class DeadLetterSource(Protocol):
    """The newest ``limit`` entries of ``environment``'s dead-letter queue, newest first."""

    async def __call__(self, environment: str, limit: int) -> Sequence[DeadLetterEntry]: ...


def entry_dict(entry: DeadLetterEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "function": entry.function,
        "reason": entry.reason,
        "dead_lettered_at": entry.dead_lettered_at,
    }


async def panel(source: DeadLetterSource | None, environment: str, limit: int) -> dict[str, object]:
    """What the page's panel shows: ``available`` is False when the engine has no source,
    and ``error`` says why the source could not be read, if it could not."""
    if source is None:
        return {"environment": environment, "available": False, "entries": []}
    try:
        entries = await source(environment, limit)
    except Exception as exc:  # the reader's own failure: the panel says it, the page goes on
        log.warning("dead_letters_not_read", environment=environment, reason=str(exc))
        return {
            "environment": environment,
            "available": True,
            "entries": [],
            "error": f"{type(exc).__name__}: {exc}",
        }
    return {
        "environment": environment,
        "available": True,
        "entries": [entry_dict(entry) for entry in entries[:limit]],
    }
