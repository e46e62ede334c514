"""Publishing again what the broker refused, a little later each time.

A negative publisher confirm (``basic.nack``) means the broker did not take the message,
and says nothing of why. On one node that is rare; on a cluster it is what a quorum
queue answers while it has no leader, which lasts from the moment the node leading it
dies until a new leader is elected and known to every node: a fraction of a second
usually, and seconds under load. RabbitMQ 3.10 may also go on refusing on a channel
whose session with the queue began while it had no leader, long after a new one was
elected (its channel-side client of the queue keeps the dead leader). So the message
is sent again on a *new* channel (the refused one is closed once its other publishes
are settled), after a pause that doubles from :data:`FIRST_PAUSE` to
:data:`LONGEST_PAUSE` with some jitter, so that the publishers a failover refused all
at once do not come back all at once; past the publisher's deadline the refusal is an
error.

A refusal may still have been enqueued (RabbitMQ nacks a message routed to several
queues when one of them failed), so a message sent again may arrive twice: every
receiver in Warren drops duplicates already (results by their call and index; inputs
by the container's holding table and the caller's reorder buffer). No I/O.
"""

from __future__ import annotations

import asyncio
import random

FIRST_PAUSE = 0.05
LONGEST_PAUSE = 1.0


class RefusalBackoff:
    """The pauses between attempts at one publish, until ``deadline`` (a loop time)."""

    __slots__ = ("_deadline", "_next", "refusals")

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._next = FIRST_PAUSE
        self.refusals = 0

    def pause(self, now: float) -> float | None:
        """How long to wait before the next attempt, or None when the deadline is past
        (or would be before the attempt)."""
        self.refusals += 1
        pause = self._next * random.uniform(0.5, 1.0)
        self._next = min(self._next * 2, LONGEST_PAUSE)
        if now + pause >= self._deadline:
            return None
        return pause

    async def waited(self) -> bool:
        """Sleep the next pause on the running loop's clock; False, at once, when the
        deadline is past (the refusal is then the publisher's error)."""
        pause = self.pause(asyncio.get_running_loop().time())
        if pause is None:
            return False
        await asyncio.sleep(pause)
        return True
