"""Telling the engine that an input raised, within a budget.

The caller gets the whole failure in its result; the engine, which never reads result
queues, hears of it here, so that its dashboard can show the last failures of each
function with their tracebacks. A map whose every input fails must not turn into as
many pipe messages: the container reports at most ``RATE`` failures a second (with a
burst of as many), counts the others, and the next report says how many it left out.
Only a reported failure's record is decoded, so one left out costs a counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from warren.wire import failure

from warren_engine.pipe.messages import Event, Raised

RATE = 10.0  # reports per second, and the burst
MAX_TRACEBACK = 8 * 1024  # characters of a reported traceback: its start and its end
MAX_MESSAGE = 1024


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters cut ...]\n{text[-half:]}"


class FailureReports:
    """Sends a :class:`Raised` event for each failed attempt, while the budget lasts."""

    def __init__(
        self,
        send: Callable[[Event], None],
        rate: float = RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._rate = rate
        self._clock = clock
        self._tokens = rate
        self._filled_at = clock()
        self.unreported = 0

    def report(self, call: str, index: int, attempt: int, retrying: bool, record: bytes) -> None:
        """``record`` is the failure as the result carries it (``warren.wire.failure``)."""
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._filled_at) * self._rate)
        self._filled_at = now
        if self._tokens < 1:
            self.unreported += 1
            return
        self._tokens -= 1
        try:
            described = failure.describe(record)
        except Exception:  # a record this container wrote: never expected, never fatal
            described = {"type": "Exception", "message": "(undecodable failure)", "traceback": ""}
        event = Raised(
            time=time.time(),
            call=call,
            index=index,
            attempt=attempt,
            retrying=retrying,
            error_type=described["type"],
            message=_cut(described["message"], MAX_MESSAGE),
            traceback=_cut(described["traceback"], MAX_TRACEBACK),
            unreported=self.unreported,
        )
        try:
            self._send(event)
        except OSError:
            return  # the engine is gone: the container is stopping anyway
        self.unreported = 0
