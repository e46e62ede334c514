"""What one spawned call printed: ``call.logs()``, from its spawn until it has finished.

The lines come from the environment's log stream (:mod:`warren.wire.logs`), read from a
little before the spawn and filtered to the call's id by a :class:`LogReader`. The
iterator follows the call while it runs; once its result is there (a value, an error,
a cancel, or gone after the retention period) it reads on until the stream has been
quiet for a moment, since a container's last lines may be published just after its
result, and ends. The stream keeps lines a day and 1 GiB at most: for an older call,
only what is left shows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from warren.client.connection import Client
from warren.client.log_reader import LogReader
from warren.wire.amqp import NotFound
from warren.wire.logs import STDOUT, LogBatch

# How far the spawner's clock and its containers' may differ (lines carry their time).
CLOCK_SLACK_SECONDS = 2.0
# Once the result is there: the stream is caught up after this long without a line...
CAUGHT_UP_SECONDS = 0.5
# ...or after this long at most.
DRAIN_LIMIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class OutputLine:
    """A line a function wrote (without its newline): ``print``, ``sys.stderr`` or a
    ``logging`` record. ``index`` is the input's index in its call (0 for a spawn)."""

    time: float
    stream: Literal["stdout", "stderr"]
    text: str
    function: str
    container: str
    index: int


def output_lines(batch: LogBatch) -> list[OutputLine]:
    return [
        OutputLine(
            line.time,
            "stdout" if line.stream == STDOUT else "stderr",
            line.text,
            batch.function,
            batch.container,
            line.index,
        )
        for line in batch.lines
    ]


async def call_lines(
    client: Client,
    environment: str,
    call_id: str,
    spawned_at: float,
    finished: Callable[[], Awaitable[object]],
) -> AsyncIterator[list[OutputLine]]:
    """Chunks of the call's lines, in the order each container wrote them, until
    ``finished()`` (the call's outcome, whatever it is) has returned and the stream is
    caught up."""
    arrived: asyncio.Queue[list[OutputLine]] = asyncio.Queue()

    def on_batch(batch: LogBatch) -> None:
        if lines := output_lines(batch):
            arrived.put_nowait(lines)

    reader = LogReader(on_batch, call=call_id, since=spawned_at - CLOCK_SLACK_SECONDS)
    try:
        await reader.start(client.session, environment)
    except NotFound:
        return  # no app ever ran in this environment: no line was written
    done = asyncio.ensure_future(_settled(finished))
    try:
        while not done.done():
            chunk = asyncio.ensure_future(arrived.get())
            await asyncio.wait([chunk, done], return_when=asyncio.FIRST_COMPLETED)
            if not chunk.done():
                chunk.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await chunk
                break
            yield chunk.result()
        await reader.quiet(CAUGHT_UP_SECONDS, DRAIN_LIMIT_SECONDS)
        while not arrived.empty():
            yield arrived.get_nowait()
    finally:
        done.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await done
        await reader.close()


async def _settled(finished: Callable[[], Awaitable[object]]) -> None:
    # Its value or its exception: either way the call has finished.
    with contextlib.suppress(Exception):
        await finished()
