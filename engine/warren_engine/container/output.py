"""What a function writes, captured line by line: ``sys.stdout``, ``sys.stderr``, ``logging``.

:func:`capture` replaces the container's ``sys.stdout`` and ``sys.stderr`` with streams
that cut what is written into lines (at most ``MAX_LINE`` characters: a longer one is
cut in pieces, so a line never written to its end costs no more than that) and hand
each line to a sink as it ends, with no buffering of their own: ``print`` reaches the
caller line by line whatever ``PYTHONUNBUFFERED`` says (bytes written to their
``buffer`` are decoded as UTF-8 and captured too). The root logger passes
``INFO`` (the function may set another level) to a handler on the captured
``stderr``. The engine's own structured logs were bound to the real ``stderr`` before
this runs, and stay there: they never mix with what the function wrote.

:func:`running_input` says which input is running. The executor sets
:data:`current_input` before each call in the slot task of an async function (tasks it
starts inherit it); a worker thread of a sync one keeps the job it runs in a cell of
its own, found through :data:`sync_input` (a thread-local set once per thread: an item
store per input, not a context variable's set and reset). A part-written line is kept
per thread, so two threads printing at once do not splice their lines together.
"""

from __future__ import annotations

import codecs
import contextvars
import io
import logging
import sys
import threading
from typing import Protocol

from warren.wire.logs import NO_INDEX, STDERR, STDOUT

MAX_LINE = 16 * 1024
LOG_FORMAT = "%(levelname)s:%(name)s:%(message)s"
# Libraries whose INFO records are about Warren's own connection, not the function.
QUIET_LOGGERS = ("aio_pika", "aiormq", "asyncio")

current_input: contextvars.ContextVar[tuple[str, int]] = contextvars.ContextVar(
    "warren_current_input", default=("", NO_INDEX)
)


class _Job(Protocol):
    invocation_id: str
    index: int


class _SyncInput(threading.local):
    cell: list[_Job | None] | None = None  # a sync worker thread's: the job it runs


sync_input = _SyncInput()


def running_input() -> tuple[str, int]:
    """The call and index of the input running where this is asked."""
    cell = sync_input.cell
    if cell is not None and (job := cell[0]) is not None:
        return job.invocation_id, job.index
    return current_input.get()


class LineSink(Protocol):
    def write(self, stream: int, text: str) -> None: ...


class _Partial(threading.local):
    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.size = 0


class CapturedStream(io.TextIOBase):
    """A text stream whose every complete line goes to ``sink`` as ``stream``."""

    def __init__(self, sink: LineSink, stream: int, original: io.TextIOBase) -> None:
        super().__init__()
        self._sink = sink
        self._stream = stream
        self._original = original
        self._partial = _Partial()
        self._buffer = BinaryView(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]  # read-only in io's own streams too
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "backslashreplace"

    @property
    def buffer(self) -> BinaryView:
        """Bytes written here are decoded as UTF-8 and captured like text."""
        return self._buffer

    def reconfigure(self, **options: object) -> None:
        """Nothing to change: every line is handed over as it ends, whatever is asked."""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        # Code that hands its stdout to a child process (subprocess, faulthandler) gets the
        # container's real descriptor: that output reaches the engine's stderr, untagged.
        return self._original.fileno()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        partial, start, end = self._partial, 0, len(text)
        while start < end:
            room = MAX_LINE - partial.size
            newline = text.find("\n", start, start + room)
            if newline >= 0:
                self._end_line(text[start:newline])
                start = newline + 1
            elif end - start >= room:
                self._end_line(text[start : start + room])
                start += room
            else:
                partial.pieces.append(text[start:])
                partial.size += end - start
                break
        return end

    def flush(self) -> None:
        """A part-written line stays until its end: ``flush`` does not cut it."""

    def _end_line(self, tail: str) -> None:
        partial = self._partial
        if partial.pieces:
            partial.pieces.append(tail)
            tail = "".join(partial.pieces)
            partial.pieces.clear()
            partial.size = 0
        self._sink.write(self._stream, tail)


class BinaryView(io.RawIOBase):
    """``sys.stdout.buffer`` of a captured stream: UTF-8 bytes, decoded as they come."""

    def __init__(self, text: CapturedStream) -> None:
        super().__init__()
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("backslashreplace")
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        with self._lock:  # a character's bytes may come in two writes
            text = self._decoder.decode(bytes(data))
        self._text.write(text)
        return len(data)


def capture(sink: LineSink) -> None:
    """From now on, what this process writes to ``sys.stdout``, ``sys.stderr`` and the root
    logger goes to ``sink``, line by line."""
    stderr = CapturedStream(sink, STDERR, sys.__stderr__)  # type: ignore[arg-type]
    sys.stdout = CapturedStream(sink, STDOUT, sys.__stdout__)  # type: ignore[arg-type]
    sys.stderr = stderr
    root = logging.getLogger()
    for handler in list(root.handlers):  # the engine's, on the real stderr
        root.removeHandler(handler)
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
