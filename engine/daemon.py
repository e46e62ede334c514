"""The engine: answers control requests, declares topology, runs container pools.

It listens on an *exclusive* control queue, so the queue exists exactly while an
engine is connected: a client that publishes a request with ``mandatory=True`` learns
at once whether an engine is there. The daemon uses ``warren.v1.control``; an engine
started by ``app.run()`` for one script uses a private ``warren.v1.control.<run>`` and
follows its parent process (it stops when the parent dies).

Requests: ``register_app`` (store the code, declare queues, start pools), ``stop_app``
(stop pools, answer still-queued inputs with an error, delete the queues), ``ping``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from aiormq.exceptions import ChannelLockedResource

from engine.cancels import CancelMemory
from engine.drain import drain_queue
from engine.pool import ContainerPool, PoolConfig
from sdk import exceptions, naming, topology
from sdk.codec import unpack_envelope
from sdk.config import Settings
from sdk.protocol import Cancel, ControlReply, ControlRequest, FunctionSpec
from sdk.shipping import check_python

log = structlog.get_logger(__name__)

PARENT_POLL_SECONDS = 0.5


@dataclass(slots=True)
class RunningApp:
    environment: str
    app: str
    instance: str
    specs: list[FunctionSpec]
    directory: Path
    ephemeral: bool
    pools: dict[str, ContainerPool] = field(default_factory=dict)

    def queue(self, tag: str) -> str:
        return naming.function_queue(self.environment, self.instance, tag)


class Engine:
    def __init__(
        self,
        config: Settings,
        *,
        run_id: str | None = None,
        parent_pid: int | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = config
        self.control_queue = naming.control_queue(run_id)
        self.parent_pid = parent_pid
        self._owns_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="warren-engine-"))
        self.apps: dict[tuple[str, str], RunningApp] = {}
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self.cancels = CancelMemory()
        self._listening: set[str] = set()
        self._listener_id = f"engine-{uuid.uuid4().hex[:12]}"

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.settings.broker_url, client_properties={"connection_name": "warren-engine"}
        )
        self._channel = await self._connection.channel()
        assert self._channel is not None
        try:
            queue = await self._channel.declare_queue(self.control_queue, exclusive=True)
        except ChannelLockedResource:
            raise exceptions.EngineError(
                f"another engine already listens on {self.control_queue!r}"
            ) from None
        await queue.consume(self._on_control)
        log.info("engine_started", control_queue=self.control_queue, pid=os.getpid())
        sys.stdout.write(f"READY {self.control_queue}\n")
        sys.stdout.flush()
        watcher = asyncio.create_task(self._watch_parent()) if self.parent_pid else None
        try:
            await self._stop.wait()
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            await self._shutdown()

    async def _shutdown(self) -> None:
        log.info("engine_stopping", apps=len(self.apps))
        async with self._lock:
            for key in list(self.apps):
                await self._stop_app(self.apps.pop(key))
        if self._connection is not None:
            await self._connection.close()
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        log.info("engine_stopped")

    async def _watch_parent(self) -> None:
        while os.getppid() == self.parent_pid:
            await asyncio.sleep(PARENT_POLL_SECONDS)
        log.warning("engine_orphaned", parent=self.parent_pid)
        self._stop.set()

    # -- control requests ------------------------------------------------------------

    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            try:
                request = ControlRequest.from_body(unpack_envelope(message.body).body)
                handler = getattr(self, f"_op_{request.op}", None)
                if handler is None:
                    raise exceptions.InvalidError(f"unknown control operation {request.op!r}")
                reply = ControlReply(True, await handler(request.args))
            except exceptions.WarrenError as exc:
                reply = ControlReply(False, error=type(exc).__name__, message=str(exc))
            except Exception as exc:
                log.exception("control_failed")
                reply = ControlReply(
                    False, error="EngineError", message=f"{type(exc).__name__}: {exc}"
                )
            if message.reply_to and self._channel is not None:
                await self._channel.default_exchange.publish(
                    aio_pika.Message(
                        reply.to_envelope().pack(),
                        correlation_id=message.correlation_id,
                        type="control_reply",
                    ),
                    routing_key=message.reply_to,
                )

    async def _on_cancel(self, message: AbstractIncomingMessage) -> None:
        try:
            self.cancels.add(Cancel.from_body(unpack_envelope(message.body).body).invocation_ids)
        except exceptions.WarrenError as exc:
            log.warning("cancel_rejected", reason=str(exc))

    async def _op_ping(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "apps": len(self.apps)}

    async def _op_register_app(self, args: dict[str, Any]) -> dict[str, Any]:
        check_python(args["code"])
        environment = naming.check_part("environment", args["environment"])
        instance = naming.check_part("app instance", args["instance"])
        specs = [FunctionSpec.from_wire(s) for s in args["functions"]]
        directory = self.state_dir / environment / instance
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "code.msgpack").write_bytes(args["code"])
        app = RunningApp(
            environment, args["app"], instance, specs, directory, bool(args.get("ephemeral"))
        )
        async with self._lock:
            previous = self.apps.pop((environment, instance), None)
            if previous is not None:
                await self._stop_pools(previous)
            await self._declare(app)
            try:
                await self._start_pools(app, tuple(args.get("sys_path", ())))
            except BaseException:
                await self._stop_app(app)
                raise
            self.apps[(environment, instance)] = app
        log.info("app_registered", app=app.app, instance=instance, functions=len(specs))
        return {"queues": {spec.tag: app.queue(spec.tag) for spec in specs}}

    async def _op_stop_app(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (args["environment"], args["instance"])
        async with self._lock:
            app = self.apps.pop(key, None)
            if app is None:
                raise exceptions.NotFoundError(f"no running app {args['instance']!r}")
            answered = await self._stop_app(app)
        return {"inputs_answered": answered}

    # -- apps ------------------------------------------------------------------------

    async def _declare(self, app: RunningApp) -> None:
        assert self._channel is not None
        await topology.declare_dead_letters(self._channel, app.environment)
        exchange = await topology.declare_cancel_exchange(self._channel, app.environment)
        if app.environment not in self._listening:
            queue = await self._channel.declare_queue(
                naming.cancel_listener_queue(app.environment, self._listener_id),
                exclusive=True,
                auto_delete=True,
            )
            await queue.bind(exchange)
            await queue.consume(self._on_cancel, no_ack=True)
            self._listening.add(app.environment)
        for spec in app.specs:
            await topology.declare_function_queue(
                self._channel, app.environment, app.queue(spec.tag), self.settings.queue_type
            )

    async def _start_pools(self, app: RunningApp, sys_path: tuple[str, ...]) -> None:
        for spec in app.specs:
            pool = ContainerPool(
                PoolConfig(
                    broker_url=self.settings.broker_url,
                    environment=app.environment,
                    instance=app.instance,
                    queue=app.queue(spec.tag),
                    spec=spec,
                    code_path=str(app.directory / "code.msgpack"),
                    sys_path=sys_path,
                ),
                size=spec.max_containers,
                cancels=self.cancels,
            )
            app.pools[spec.tag] = pool
        await asyncio.gather(*(pool.start() for pool in app.pools.values()))

    async def _stop_pools(self, app: RunningApp) -> None:
        await asyncio.gather(*(pool.stop() for pool in app.pools.values()))
        app.pools.clear()

    async def _stop_app(self, app: RunningApp) -> int:
        """Stop an app's containers; an ephemeral app's queues go, their inputs answered."""
        await self._stop_pools(app)
        answered = 0
        if app.ephemeral and self._connection is not None:
            for spec in app.specs:
                answered += await drain_queue(
                    self._connection, app.queue(spec.tag), f"app {app.app!r} stopped"
                )
            shutil.rmtree(app.directory, ignore_errors=True)
        log.info("app_stopped", app=app.app, instance=app.instance, inputs_answered=answered)
        return answered


async def run_engine(config: Settings, **kwargs: Any) -> None:
    engine = Engine(config, **kwargs)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, engine.request_stop)
    await engine.serve()
