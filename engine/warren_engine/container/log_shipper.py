"""A container's outgoing output: its function's lines, batched to the log stream, bounded.

Lines come from any thread (:mod:`warren_engine.container.output` hands them over as
they are written) and wait here, tagged with the input that was running, until the
loop publishes them every ``FLUSH_SECONDS`` (sooner once ``FLUSH_CHARS`` are waiting),
in :class:`~warren.wire.logs.LogBatch` messages on a channel of their own, never on the
results' path. Two budgets bound it: a token bucket of ``rate`` characters per second
(a burst of ``BURST_SECONDS`` of it), and ``MAX_PENDING`` characters waiting (the
broker away). A line over either is dropped and counted, and the next batch says how
many were: a function printing a flood costs the container a counter, not memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import structlog
from warren.wire.amqp import BrokerError, Channel, ChannelClosed
from warren.wire.logs import LogBatch, LogLine

from warren_engine.container.output import running_input

log = structlog.get_logger(__name__)

FLUSH_SECONDS = 0.1
FLUSH_CHARS = 64 * 1024
MAX_PENDING = 4 * 1024 * 1024
BURST_SECONDS = 2.0
# What a line costs beyond its text, so a flood of empty lines is bounded as well.
LINE_OVERHEAD = 32


class LogShipper:
    """The lines of one container waiting to be published; :meth:`write` from any thread."""

    def __init__(self, app: str, function: str, container: str, rate: int) -> None:
        self._app = app
        self._function = function
        self._container = container
        self._rate = float(rate)
        self._burst = self._rate * BURST_SECONDS
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._lock = threading.Lock()
        self._lines: list[LogLine] = []
        self._pending = 0
        self._dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full = asyncio.Event()
        self._channel: Channel | None = None
        self._exchange = ""
        self._refused = False

    def open(self, channel: Channel, exchange: str) -> None:
        """Publish on ``channel`` (after each connection) to the environment's log exchange."""
        self._loop = asyncio.get_running_loop()
        self._channel, self._exchange = channel, exchange
        self._refused = False

    def write(self, stream: int, text: str) -> None:
        """Take one line (no newline), or count it dropped if it is over budget."""
        cost = len(text) + LINE_OVERHEAD
        call, index = running_input()
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
            self._refilled = now
            if cost > self._tokens or self._pending + cost > MAX_PENDING:
                self._dropped += 1
                return
            self._tokens -= cost
            self._lines.append(LogLine(time.time(), stream, call, index, text))
            self._pending += cost
            full = self._pending >= FLUSH_CHARS
        if full and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._full.set)

    async def run(self) -> None:
        """Publish what waits every ``FLUSH_SECONDS``, or as soon as a batch is full."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), FLUSH_SECONDS)
            self._full.clear()
            self.flush()

    def flush(self) -> None:
        """Publish every line waiting (kept while there is no channel, within budget)."""
        channel = self._channel
        if channel is None:
            return
        if channel.closed.done():  # lines wait for the next connection, within budget
            error = None if channel.closed.cancelled() else channel.closed.exception()
            if isinstance(error, ChannelClosed) and not self._refused:
                self._refused = True  # e.g. a broker user without write on the log exchange
                log.warning("function_output_refused", reason=str(error))
            return
        with self._lock:
            lines, self._lines = self._lines, []
            dropped, self._dropped = self._dropped, 0
            self._pending = 0
        if not lines and not dropped:
            return
        size = _lines_per_batch(lines)
        try:
            for start in range(0, max(1, len(lines)), size):
                batch = LogBatch(
                    self._app,
                    self._function,
                    self._container,
                    tuple(lines[start : start + size]),
                    dropped if start == 0 else 0,
                )
                channel.publish(batch.to_body(), exchange=self._exchange)
        except BrokerError as exc:
            log.warning("function_output_lost", reason=str(exc), lines=len(lines))


def _lines_per_batch(lines: list[LogLine]) -> int:
    """Lines per message so that one holds about ``FLUSH_CHARS`` (lines are at most
    ``output.MAX_LINE`` long)."""
    if not lines:
        return 1
    mean = sum(len(line.text) + LINE_OVERHEAD for line in lines) / len(lines)
    return max(1, int(FLUSH_CHARS / mean))
