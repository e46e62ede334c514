"""``warren app logs``: what an app's functions printed, read back from the log stream.

Lines are written one per line of output, as
``<time> <function> <call>:<index> [<container>] <stream> <text>``, or as JSON objects
(``--json``). Without ``--follow`` the command ends once the stream has nothing more
for it (nothing arrived for ``CAUGHT_UP_SECONDS``); with it, it waits for new lines until
interrupted. ``--since`` takes a duration: ``90s``, ``10m``, ``2h``, ``1d``.
"""

from __future__ import annotations

import asyncio
import datetime
import sys
from collections.abc import Callable
from typing import TextIO

import orjson
import warren
from warren.client.log_reader import LogReader
from warren.exceptions import InvalidError
from warren.wire.amqp import NotFound
from warren.wire.logs import STDOUT, LogBatch

CAUGHT_UP_SECONDS = 1.5
# Without --follow, reading stops after this long however much keeps arriving.
READ_LIMIT_SECONDS = 300.0
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``10m``, ``2h``, ``1d`` (a bare number is seconds)."""
    text = text.strip().lower()
    scale = UNITS.get(text[-1:], 0)
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise InvalidError(f"{text!r} is not a duration (such as 90s, 10m, 2h, 1d)") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise InvalidError(f"{text!r} is not a duration (such as 90s, 10m, 2h, 1d)")
    return seconds


def _when(time: float) -> str:
    moment = datetime.datetime.fromtimestamp(time, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def text_writer(out: TextIO) -> Callable[[LogBatch], None]:
    def write(batch: LogBatch) -> None:
        where = f"[{batch.container}]"
        if batch.dropped:
            out.write(f"{batch.function} {where} [warren] {batch.dropped} lines dropped\n")
        for line in batch.lines:
            stream = "stdout" if line.stream == STDOUT else "stderr"
            call = f"{line.call}:{line.index}" if line.call else "-"
            out.write(f"{_when(line.time)} {batch.function} {call} {where} {stream} {line.text}\n")
        out.flush()

    return write


def json_writer(out: TextIO) -> Callable[[LogBatch], None]:
    def write(batch: LogBatch) -> None:
        common = {"app": batch.app, "function": batch.function, "container": batch.container}
        if batch.dropped:
            out.write(orjson.dumps({**common, "dropped": batch.dropped}).decode() + "\n")
        for line in batch.lines:
            record = {
                **common,
                "time": _when(line.time),
                "call": line.call,
                "index": line.index,
                "stream": "stdout" if line.stream == STDOUT else "stderr",
                "text": line.text,
            }
            out.write(orjson.dumps(record).decode() + "\n")
        out.flush()

    return write


async def show_logs(
    app: str, function: str | None, since: float | None, follow: bool, as_json: bool
) -> None:
    """Write the app's lines kept since ``since`` (a Unix time; None: all) to stdout."""
    write = json_writer(sys.stdout) if as_json else text_writer(sys.stdout)
    async with warren.Client.connect() as client:
        reader = LogReader(write, app=app, function=function, since=since)
        try:
            await reader.start(client.session, client.environment)
        except NotFound:
            raise InvalidError(
                f"no app has run in environment {client.environment!r}: it has no logs"
            ) from None
        try:
            if follow:
                await asyncio.Event().wait()  # until interrupted
            await reader.quiet(CAUGHT_UP_SECONDS, READ_LIMIT_SECONDS)
        finally:
            await reader.close()
