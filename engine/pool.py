"""A pool of container processes for one function.

The pool keeps ``size`` containers running: each slot has a supervisor task that
starts a container process, waits for it to exit, and starts another unless the pool
is stopping (with a growing back-off when containers die young, so a crash loop does
not spin). Stopping sends SIGTERM, waits a grace period for in-flight inputs, and
kills what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from engine.cancels import CancelMemory
from sdk import exceptions
from sdk.codec import packb
from sdk.protocol import FunctionSpec

log = structlog.get_logger(__name__)

STOP_GRACE = 35.0
START_TIMEOUT = 120.0
MIN_HEALTHY_SECONDS = 5.0
MAX_BACKOFF = 30.0


@dataclass(frozen=True, slots=True)
class PoolConfig:
    broker_url: str
    environment: str
    instance: str
    queue: str
    spec: FunctionSpec
    code_path: str
    sys_path: tuple[str, ...] = ()


class ContainerPool:
    """Keeps ``size`` containers of one function alive until stopped."""

    def __init__(self, config: PoolConfig, size: int, cancels: CancelMemory) -> None:
        self.config = config
        self.size = size
        self._cancels = cancels
        self._stopping = False
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._supervisors: list[asyncio.Task[None]] = []
        self._ready: asyncio.Future[None] | None = None
        self._log = log.bind(function=config.spec.tag, app=config.instance)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes.values() if p.returncode is None]

    async def start(self) -> None:
        """Start the containers; return once one is ready, or raise why it could not start."""
        self._ready = asyncio.get_running_loop().create_future()
        for slot in range(self.size):
            self._supervisors.append(asyncio.create_task(self._supervise(slot)))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except BaseException:
            await self.stop(grace=1.0)
            raise

    def _starting(self, line: bytes) -> None:
        """Read a new container's first line: ``READY`` or ``FAILED {json}``."""
        ready = self._ready
        if ready is None or ready.done():
            return
        if line.startswith(b"READY"):
            ready.set_result(None)
            return
        detail = (
            orjson.loads(line.partition(b" ")[2] or b"{}") if line.startswith(b"FAILED") else {}
        )
        kind = (
            exceptions.VersionMismatchError
            if detail.get("type") == "VersionMismatchError"
            else exceptions.EngineError
        )
        message = detail.get("message") or "it exited before saying why (see the engine's log)"
        ready.set_exception(
            kind(
                f"containers of {self.config.spec.tag!r} cannot start: "
                f"{detail.get('type', 'error')}: {message}"
            )
        )

    async def stop(self, grace: float = STOP_GRACE) -> None:
        self._stopping = True
        for process in list(self._processes.values()):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [p.wait() for p in self._processes.values()]
        if waits:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(w) for w in waits], timeout=grace
            )
            for process in list(self._processes.values()):
                if process.returncode is None:
                    self._log.warning("container_killed", pid=process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)

    async def _supervise(self, slot: int) -> None:
        backoff = 0.5
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            process = await self._spawn()
            self._processes[slot] = process
            assert process.stdout is not None
            self._starting(await process.stdout.readline())
            code = await process.wait()
            if self._stopping:
                return
            lived = loop.time() - started
            self._log.warning(
                "container_exited", pid=process.pid, code=code, seconds=round(lived, 2)
            )
            backoff = 0.5 if lived >= MIN_HEALTHY_SECONDS else min(backoff * 2, MAX_BACKOFF)
            await asyncio.sleep(backoff)

    async def _spawn(self) -> asyncio.subprocess.Process:
        container_id = uuid.uuid4().hex[:12]
        config: dict[str, Any] = {
            "broker_url": self.config.broker_url,
            "environment": self.config.environment,
            "instance": self.config.instance,
            "queue": self.config.queue,
            "spec": self.config.spec.to_wire(),
            "code_path": self.config.code_path,
            "container_id": container_id,
            "parent_pid": os.getpid(),
            "sys_path": list(self.config.sys_path),
            "cancelled": self._cancels.recent(),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.container_main",
            "--app", self.config.instance, "--function", self.config.spec.tag,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(packb(config))
        await process.stdin.drain()
        process.stdin.close()
        await process.stdin.wait_closed()
        self._log.info("container_spawned", pid=process.pid, container=container_id)
        return process
