"""Container processes, forked from a pre-imported parent for fast cold starts.

A fresh interpreter spends most of a second importing asyncio, aio-pika, msgpack and
Warren before a container can take its first input. Instead the engine keeps a
``multiprocessing`` fork server that has imported all of that once
(:func:`warm_up`), and every container is a fork of it: a cold start costs the fork,
the unpickling of the app's code and a broker connection.

Each container gets three pipes: a *status* pipe on which it reports ``Ready`` (or why
it failed), then how busy it is, and sends requests; a *replies* pipe for the engine's
answers (both described in :mod:`warren_engine.pipe.pipes`); a *lifeline* whose other end only
the engine holds, so a container notices at once when its engine dies and stops,
whatever killed the engine; and its holding table (:mod:`warren_engine.pipe.holdings`), shared
memory in which it records the messages it holds; and its load gauge
(:mod:`warren_engine.pipe.gauge`), the counts of inputs it holds and runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable

import structlog
from warren.exceptions import EngineError

from warren_engine.container.container import ContainerConfig
from warren_engine.pipe.gauge import LoadGauge
from warren_engine.pipe.holdings import HoldingTable, slots_for
from warren_engine.pipe.messages import Event, Reply, decode_event, encode
from warren_engine.pipe.pipes import PipeReader

log = structlog.get_logger(__name__)

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["warren_engine.container.main"])

StatusHandler = Callable[[Event], None]


def warm_up() -> None:
    """Start the fork server now (it imports everything once); blocking, about a second."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


def kill_leftovers() -> list[int]:
    """Kill container processes still running (none should be, once the pools stopped)."""
    leftovers = [child for child in _CONTEXT.active_children() if child.pid is not None]
    for child in leftovers:
        child.kill()
    for child in leftovers:
        child.join(5)
    return [child.pid for child in leftovers if child.pid is not None]


class ContainerProcess:
    """One container process: its pid, its status reports, and its exit."""

    def __init__(self, config: ContainerConfig, on_status: StatusHandler) -> None:
        from warren_engine.container.main import forked_main

        status_reader, status_writer = _CONTEXT.Pipe(duplex=False)
        replies_reader, replies_writer = _CONTEXT.Pipe(duplex=False)
        lifeline_reader, lifeline_writer = _CONTEXT.Pipe(duplex=False)
        self.holdings = HoldingTable(slots_for(config.function.spec.max_inputs))
        self.gauge = LoadGauge()
        self._process = _CONTEXT.Process(
            target=forked_main,
            args=(
                config,  # pickled by the fork server, like the pipes that follow
                status_writer,
                replies_reader,
                lifeline_reader,
                self.holdings.shared,
                self.gauge.shared,
            ),
            name=f"warren-container-{config.container_id}",
            daemon=False,
        )
        self._process.start()
        status_writer.close()
        replies_reader.close()
        lifeline_reader.close()
        self._status = PipeReader(status_reader)
        self._replies = replies_writer
        self._lifeline = lifeline_writer
        self._on_status = on_status
        self._status_closed = False
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._loop.add_reader(self._status.fileno(), self.read_status)
        self._loop.add_reader(self._process.sentinel, self._reap)

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    @property
    def alive(self) -> bool:
        return not self._exited.done()

    def signal(self, signum: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def answer(self, reply: Reply) -> None:
        """Send an answer to one of the container's requests (nothing if it is gone)."""
        with contextlib.suppress(OSError):
            self._replies.send_bytes(encode(reply))

    async def wait(self) -> int:
        """The exit code (negative: killed by that signal)."""
        return await asyncio.shield(self._exited)

    def read_status(self) -> None:
        """Handle whatever the container has written and not been read yet."""
        if self._status_closed:
            return
        messages, ended = self._status.read()
        for message in messages:
            try:
                event = decode_event(message)
            except EngineError as exc:
                # Container and engine run the same code, so this is a bug: say so, and keep
                # reading (the container's next message is framed on its own).
                log.error("pipe_message_refused", pid=self._process.pid, reason=str(exc))
                continue
            self._on_status(event)
        if ended:
            self._status_closed = True
            self._loop.remove_reader(self._status.fileno())

    def _reap(self) -> None:
        code: int | None = None
        try:
            self._loop.remove_reader(self._process.sentinel)
            self._process.join(0)
            code = self._process.exitcode
            self.read_status()  # whatever it said last
            if not self._status_closed:
                self._status_closed = True
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(self._status.fileno())
            self._status.close()
            self._replies.close()
            self._lifeline.close()
        finally:
            # Whatever went wrong above, whoever waits for this process must not wait forever.
            if not self._exited.done():
                self._exited.set_result(code if code is not None else -1)
