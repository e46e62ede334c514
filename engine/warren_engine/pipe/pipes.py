"""The pipes between a container process and its engine.

Two one-way pipes carry the messages of :mod:`warren_engine.pipe.messages`:

* **status** (container to engine): ``Ready`` or ``Failed`` once, then ``Status``
  reports (inputs held, idleness, messages received), ``Dropped`` when its broker
  connection went, and ``Request`` messages; nothing per message (what messages
  a container holds is in its holding table, :mod:`warren_engine.pipe.holdings`);
* **replies** (engine to container): ``Answered`` or ``Refused``, by request id.

A container asks its engine to publish what a container has no right to publish
itself: inputs handed back or retried into its function queue, and dead letters
(see ``broker_config``: the container user can only consume its queue and publish
results). It also asks whether a redelivered message's last holder crashed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import struct
from multiprocessing.connection import Connection
from typing import overload

import structlog
from warren.exceptions import EngineError

from warren_engine.pipe.messages import (
    ANSWERS,
    Answered,
    AskVerdict,
    DeadLetter,
    Done,
    Event,
    Query,
    Reply,
    Request,
    Requeue,
    Response,
    Verdict,
    decode_reply,
    encode,
)

log = structlog.get_logger(__name__)

REQUEST_TIMEOUT = 30.0


_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")
READ_CHUNK = 1 << 16


class PipeReader:
    """Messages from the read end of a pipe, read without blocking the event loop.

    The writer sends them with ``Connection.send_bytes`` (a 4-byte length, or -1 and an
    8-byte length, then the bytes). ``Connection.recv_bytes`` cannot read a message
    that arrives in pieces on a non-blocking pipe (and an event loop watching the pipe,
    uvloop's for one, makes it non-blocking), so this reads what is there and keeps
    the rest of a message until it is whole.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._fd = connection.fileno()
        os.set_blocking(self._fd, False)
        self._buffer = bytearray()

    def fileno(self) -> int:
        return self._fd

    def read(self) -> tuple[list[bytes], bool]:
        """The whole messages that arrived, and whether the writer is gone (end of file)."""
        ended = False
        while True:
            try:
                chunk = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                ended = True
                break
            if not chunk:
                ended = True
                break
            self._buffer += chunk
        return self._messages(), ended

    def _messages(self) -> list[bytes]:
        buffer, messages, offset = self._buffer, [], 0
        while len(buffer) - offset >= _SHORT.size:
            (size,) = _SHORT.unpack_from(buffer, offset)
            start = offset + _SHORT.size
            if size == -1:
                if len(buffer) - start < _LONG.size:
                    break
                (size,) = _LONG.unpack_from(buffer, start)
                start += _LONG.size
            if len(buffer) - start < size:
                break
            messages.append(bytes(buffer[start : start + size]))
            offset = start + size
        del buffer[:offset]
        return messages

    def close(self) -> None:
        self._connection.close()


class EngineLink:
    """The container's end: send events, make requests and await their answers."""

    def __init__(self, status: Connection, replies: Connection) -> None:
        self._status = status
        self._replies = PipeReader(replies)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start reading answers on ``loop``."""
        self._loop = loop
        loop.add_reader(self._replies.fileno(), self._on_replies)

    def send(self, event: Event) -> None:
        """Send an event; raises ``OSError`` when the engine is gone."""
        self._status.send_bytes(encode(event))

    @overload
    async def request(self, query: AskVerdict) -> Verdict: ...

    @overload
    async def request(self, query: Requeue | DeadLetter) -> Done: ...

    async def request(self, query: Query) -> Response:
        """Ask the engine to do ``query``; its answer, or ``EngineError`` saying why not."""
        assert self._loop is not None, "the link is not attached to a loop"
        request_id = next(self._ids)
        answer: asyncio.Future[Response] = self._loop.create_future()
        self._pending[request_id] = answer
        try:
            self.send(Request(request_id, query))
            response = await asyncio.wait_for(answer, REQUEST_TIMEOUT)
        except OSError as exc:
            raise EngineError(f"the engine is gone: {exc}") from exc
        except TimeoutError:
            raise EngineError(
                f"the engine did not answer {type(query).__name__} in {REQUEST_TIMEOUT:g}s"
            ) from None
        finally:
            self._pending.pop(request_id, None)
        expected = ANSWERS[type(query)]
        if type(response) is not expected:
            raise EngineError(
                f"the engine answered {type(query).__name__} with {type(response).__name__}, "
                f"not {expected.__name__}"
            )
        return response

    def _on_replies(self) -> None:
        messages, ended = self._replies.read()
        for message in messages:
            try:
                reply = decode_reply(message)
            except EngineError as exc:
                # Engine and container run the same code, so this is a bug: say so, and
                # keep reading (each message is framed on its own).
                log.error("pipe_reply_refused", reason=str(exc))
                continue
            self._resolve(reply)
        if ended:
            assert self._loop is not None
            self._loop.remove_reader(self._replies.fileno())
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(EngineError("the engine is gone"))

    def _resolve(self, reply: Reply) -> None:
        answer = self._pending.get(reply.id)
        if answer is None or answer.done():
            return
        if isinstance(reply, Answered):
            answer.set_result(reply.response)
        else:
            answer.set_exception(EngineError(reply.error))
