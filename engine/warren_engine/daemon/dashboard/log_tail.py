"""The last lines each function printed, for the dashboard's log panel.

The lines are on the environment's log stream (see :mod:`warren.wire.logs`). A page
that polls every two seconds must not read the stream back each time, so the first
request for an environment's lines starts one :class:`~warren.client.log_reader.LogReader`
for it, from ``LOOK_BACK`` seconds ago, which keeps the newest ``LINES`` lines of each
function (the lines of a function's variants are its own) as they arrive. A reader
nobody asked for in ``IDLE`` seconds is closed (the dashboard calls
:meth:`LogTail.close_idle` as it samples), so an engine whose dashboard nobody looks at
reads no stream. Memory is bounded: ``LINES`` lines per function, each cut at
``MAX_TEXT`` characters.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import structlog
from warren.client.log_reader import LogReader
from warren.wire.amqp import BrokerError
from warren.wire.logs import STDOUT, LogBatch
from warren.wire.session import BrokerSession

log = structlog.get_logger(__name__)

LINES = 200
LOOK_BACK = 600.0
IDLE = 120.0
MAX_TEXT = 4000


@dataclass(frozen=True, slots=True)
class TailLine:
    time: float
    stream: str  # "stdout" or "stderr"
    container: str
    call: str
    index: int
    text: str

    def as_dict(self) -> dict[str, object]:
        return {
            "time": self.time,
            "stream": self.stream,
            "container": self.container,
            "call": self.call,
            "index": self.index,
            "text": self.text,
        }


class _Kept:
    """The newest lines of each function of one environment."""

    __slots__ = ("by_function",)

    def __init__(self) -> None:
        self.by_function: dict[tuple[str, str], deque[TailLine]] = {}

    def add(self, batch: LogBatch) -> None:
        kept = self.by_function.setdefault((batch.app, batch.function), deque(maxlen=LINES))
        if batch.dropped:
            text = f"[warren] {batch.dropped} lines dropped"
            kept.append(TailLine(time.time(), "stderr", batch.container, "", -1, text))
        for line in batch.lines:
            stream = "stdout" if line.stream == STDOUT else "stderr"
            text = line.text if len(line.text) <= MAX_TEXT else line.text[:MAX_TEXT] + " [...]"
            kept.append(TailLine(line.time, stream, batch.container, line.call, line.index, text))


@dataclass(slots=True)
class _Environment:
    reader: LogReader
    kept: _Kept
    asked_at: float


class LogTail:
    def __init__(self, session: BrokerSession, *, idle: float = IDLE) -> None:
        self._session = session
        self._idle = idle
        self._environments: dict[str, _Environment] = {}
        self._lock = asyncio.Lock()

    async def lines(self, environment: str, instance: str, function: str) -> tuple[TailLine, ...]:
        """The newest lines of ``function`` of the app ``instance`` (empty while the
        environment has no log stream yet), oldest first."""
        async with self._lock:
            now = time.monotonic()
            kept = self._environments.get(environment)
            if kept is None:
                kept = await self._open(environment, now)
                if kept is None:
                    return ()
            kept.asked_at = now
            return tuple(kept.kept.by_function.get((instance, function), ()))

    async def _open(self, environment: str, now: float) -> _Environment | None:
        kept = _Kept()
        reader = LogReader(kept.add, since=time.time() - LOOK_BACK)
        try:
            await reader.start(self._session, environment)
        except (BrokerError, OSError) as exc:  # no stream yet (no app ran), or the broker is away
            log.info("log_tail_not_started", environment=environment, reason=str(exc))
            await reader.close()
            return None
        opened = self._environments[environment] = _Environment(reader, kept, now)
        return opened

    async def close_idle(self) -> None:
        """Close the readers nobody asked for lines in ``IDLE`` seconds (``idle``)."""
        async with self._lock:
            now = time.monotonic()
            for environment, kept in list(self._environments.items()):
                if now - kept.asked_at > self._idle:
                    del self._environments[environment]
                    await kept.reader.close()

    async def close(self) -> None:
        async with self._lock:
            for kept in self._environments.values():
                await kept.reader.close()
            self._environments.clear()
