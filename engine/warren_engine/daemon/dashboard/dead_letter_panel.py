"""The dashboard's dead-letter panel: what sits in an environment's dead-letter queue.

The dashboard does not read the queue itself: it shows what a :class:`DeadLetterSource`
returns, a callable the engine gives it (the reader ``warren dead list`` uses, one for
the whole engine); with none, the panel says the engine has no reader to show. The
source returns a listing of entries, each anything with the attributes of
:class:`DeadLetterEntry`, and ``total``, the messages the queue held.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


class DeadLetterEntry(Protocol):
    """One dead-lettered input, as the panel shows it."""

    @property
    def id(self) -> str:
        """What ``warren dead show ID`` takes."""
        ...

    @property
    def reason(self) -> str:
        """Why it was dead-lettered (the ``x-warren-reason`` header)."""
        ...

    @property
    def app(self) -> str | None:
        """The app instance whose queue it came from, if known."""
        ...

    @property
    def function(self) -> str | None:
        """The function (or variant) whose queue it came from, if known."""
        ...

    @property
    def dead_at(self) -> float | None:
        """When, as a Unix time, if the dead letter recorded it."""
        ...


class DeadLetterListing(Protocol):
    @property
    def inputs(self) -> Sequence[DeadLetterEntry]: ...

    @property
    def total(self) -> int:
        """Messages the queue held when it was read (more than ``inputs`` past the limit)."""
        ...


class DeadLetterSource(Protocol):
    """The first ``limit`` dead inputs of ``environment``'s dead-letter queue."""

    async def __call__(self, environment: str, limit: int) -> DeadLetterListing: ...


def entry_dict(entry: DeadLetterEntry) -> dict[str, object]:
    return {
        "id": entry.id,
        "reason": entry.reason,
        "app": entry.app,
        "function": entry.function,
        "dead_at": entry.dead_at,
    }


async def panel(source: DeadLetterSource | None, environment: str, limit: int) -> dict[str, object]:
    """What the page's panel shows: ``available`` is False when the engine has no source,
    and ``error`` says why the source could not be read, if it could not."""
    shown: dict[str, object] = {"environment": environment, "available": source is not None}
    if source is None:
        return {**shown, "entries": [], "total": 0}
    try:
        listing = await source(environment, limit)
    except Exception as exc:  # the reader's own failure: the panel says it, the page goes on
        log.warning("dead_letters_not_read", environment=environment, reason=str(exc))
        return {**shown, "entries": [], "total": 0, "error": f"{type(exc).__name__}: {exc}"}
    entries = [entry_dict(entry) for entry in listing.inputs[:limit]]
    return {**shown, "entries": entries, "total": listing.total}
