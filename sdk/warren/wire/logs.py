"""What a function printed: its lines, batched per container, on the environment's log stream.

A container captures its function's ``stdout``, ``stderr`` and ``logging`` records line
by line and publishes them in :class:`LogBatch` messages to the environment's log
exchange (:func:`warren.wire.naming.log_stream`), which feeds one RabbitMQ stream queue
per environment (:func:`warren.wire.topology.log_stream_arguments`). Callers read it
back: ``app.run()`` from the moment it starts, ``warren app logs`` for a deployed app.

A batch is unsigned: nothing in it is ever unpickled or run, and decoding checks every
field's type. ``dropped`` counts the lines the container left out, over its output
budget, since its previous batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Self

from warren.exceptions import DeserializationError
from warren.wire.codec import packb, unpackb

LOG_VERSION: Final = 1

STDOUT: Final = 1
STDERR: Final = 2
STREAMS: Final = (STDOUT, STDERR)
# The input a line was written for is unknown (import time, a thread of the function's own).
NO_INDEX: Final = -1


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line as the function wrote it (without its newline), and the input it ran.

    ``call`` is the invocation id (empty when no input was running), ``index`` the
    input's index in it.
    """

    time: float
    stream: int
    call: str
    index: int
    text: str

    @classmethod
    def from_fields(cls, fields: object) -> Self:
        if not (
            isinstance(fields, list)
            and len(fields) == 5
            and isinstance(fields[0], int | float)
            and fields[1] in STREAMS
            and isinstance(fields[2], str)
            and isinstance(fields[3], int)
            and isinstance(fields[4], str)
        ):
            raise DeserializationError("malformed log batch: bad line")
        return cls(float(fields[0]), fields[1], fields[2], fields[3], fields[4])


@dataclass(frozen=True, slots=True)
class LogBatch:
    """Lines of one container, in the order written.

    ``app`` is the app's instance (its name when deployed, its run's instance when
    ephemeral), ``function`` the function's tag.
    """

    app: str
    function: str
    container: str
    lines: tuple[LogLine, ...]
    dropped: int = 0
    version: int = LOG_VERSION

    def to_body(self) -> bytes:
        lines = [[line.time, line.stream, line.call, line.index, line.text] for line in self.lines]
        return packb([self.version, self.app, self.function, self.container, lines, self.dropped])

    @classmethod
    def from_body(cls, body: bytes) -> Self:
        try:
            version, app, function, container, lines, dropped = unpackb(body)
        except (ValueError, TypeError) as exc:
            raise DeserializationError(f"malformed log batch: {exc}") from exc
        if version != LOG_VERSION:
            raise DeserializationError(f"log batch version {version!r} is not supported")
        if not (
            isinstance(app, str)
            and isinstance(function, str)
            and isinstance(container, str)
            and isinstance(lines, list)
            and isinstance(dropped, int)
        ):
            raise DeserializationError("malformed log batch: wrong field types")
        parsed = tuple(LogLine.from_fields(line) for line in lines)
        return cls(app, function, container, parsed, dropped, version)
