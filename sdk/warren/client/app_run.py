"""Ephemeral app runs: registering an app with an engine, and the child engine.

``app.run()`` ships the app's functions to an engine once (pickled by value: functions
from ``__main__`` or the app's own module, so a container needs no copy of the file),
and the engine declares the queues and starts the containers. When an engine daemon
is listening on the control queue it takes the app; otherwise one is started as a
child process (``python -m warren_engine serve``) with a private control queue, and stopped
when the app stops. The SDK never runs an engine in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from warren.client.connection import Client
from warren.client.invocation import Target
from warren.exceptions import EngineError, EngineNotFoundError, InvalidError
from warren.wire import naming
from warren.wire.code_bundle import pack_app_code
from warren.wire.control import AppBundle, AppDeployed, DeployApp, RegisterApp, StopApp
from warren.wire.spec import FunctionSpec

log = structlog.get_logger(__name__)

ENGINE_STOP_TIMEOUT = 30.0
# Longer than an engine waits for a new app's first container (its code may import a lot).
REGISTER_TIMEOUT = 180.0
ENGINE_BACK_SECONDS = 15.0


@dataclass(slots=True)
class RunHandle:
    """A running ephemeral app: where it runs, and the child engine if we started one."""

    client: Client
    environment: str
    instance: str
    control_queue: str
    engine: subprocess.Popen[bytes] | None
    lease: str  # held by ``client``: the engine stops the app if it goes
    web_base: str = ""  # where the engine serves the app's web endpoints


@dataclass(frozen=True, slots=True)
class AppCode:
    """What an engine needs of an app to run it: its functions' specs and their code."""

    name: str
    environment: str
    specs: tuple[FunctionSpec, ...]
    functions: Mapping[str, Callable[..., Any]]  # the raw functions, by tag

    def pack(self) -> PackedApp:
        """The app as it travels: its code pickled by value."""
        return PackedApp(
            self.name, self.environment, self.specs, pack_app_code(self.name, self.functions)
        )


@dataclass(frozen=True, slots=True)
class PackedApp:
    """An app's specs and its pickled code (``warren serve`` packs it in a child process)."""

    name: str
    environment: str
    specs: tuple[FunctionSpec, ...]
    code: bytes

    def web_urls(self, instance: str, web_base: str) -> list[str]:
        """Where its web endpoints answer when it runs as ``instance`` (none without HTTP)."""
        targets = (
            Target(self.environment, self.name, instance, spec, web_base) for spec in self.specs
        )
        return [target.web_url for target in targets if target.web_url is not None]


def registration(app: PackedApp, name: str, instance: str) -> AppBundle:
    return AppBundle(
        app.environment,
        name,
        instance,
        app.specs,
        app.code,
        tuple(_client_paths()),
    )


def _client_paths() -> list[str]:
    # On one machine, containers can then import the user's other modules by reference.
    paths = [os.getcwd()]
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file:
        paths.append(os.path.dirname(os.path.abspath(main_file)))
    return paths


async def start_run(client: Client, app: PackedApp) -> RunHandle:
    run_id = uuid.uuid4().hex[:10]
    instance = naming.check_part("app instance", f"{app.name}-run-{run_id}")
    # Held while this client is connected: a daemon stops the app if the client is gone.
    lease = await client.hold_lease()
    request = RegisterApp(registration(app, app.name, instance), lease=lease)
    try:
        reply = await client.control(request, timeout=REGISTER_TIMEOUT)
        log.debug("app_registered", app=app.name, instance=instance, engine="daemon")
        return RunHandle(
            client,
            app.environment,
            instance,
            naming.control_queue(app.environment),
            None,
            lease,
            reply.web_base,
        )
    except EngineNotFoundError:
        pass  # no daemon listening: start our own engine
    control_queue = naming.control_queue(app.environment, run_id)
    engine = await _start_engine(client, run_id, app.environment)
    try:
        reply = await client.control(request, queue=control_queue, timeout=REGISTER_TIMEOUT)
    except BaseException:
        await _stop_engine(engine)
        raise
    log.debug("app_registered", app=app.name, instance=instance, engine="child")
    return RunHandle(
        client, app.environment, instance, control_queue, engine, lease, reply.web_base
    )


async def reload_run(handle: RunHandle, app: PackedApp) -> None:
    """Replace a running app's code, keeping its instance (so its queues and web URLs):
    the engine starts the new code's containers, then stops the old ones."""
    if app.environment != handle.environment:
        raise InvalidError(
            f"the app moved from environment {handle.environment!r} to {app.environment!r}: "
            "a running app keeps its environment"
        )
    request = RegisterApp(registration(app, app.name, handle.instance), lease=handle.lease)
    await handle.client.control(request, queue=handle.control_queue, timeout=REGISTER_TIMEOUT)
    log.debug("app_reloaded", app=app.name, instance=handle.instance)


async def deploy_app(client: Client, app: PackedApp, name: str | None = None) -> AppDeployed:
    """Register (or replace) the app with the engine daemon, under ``name`` if given."""
    app_name = naming.check_part("app name", name or app.name)
    return await client.control(
        DeployApp(registration(app, app_name, app_name)), timeout=REGISTER_TIMEOUT
    )


async def stop_run(client: Client, handle: RunHandle) -> None:
    request = StopApp(handle.environment, handle.instance)
    deadline = asyncio.get_running_loop().time() + ENGINE_BACK_SECONDS
    try:
        while True:
            try:
                await client.control(request, queue=handle.control_queue)
                break
            except EngineNotFoundError:
                # Our own engine is alive but not listening: it is re-declaring its control
                # queue after a broker restart. Give it a few seconds.
                alive = handle.engine is not None and handle.engine.poll() is None
                if not alive or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        if handle.engine is not None:
            await _stop_engine(handle.engine)


async def _start_engine(client: Client, run_id: str, environment: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["WARREN_BROKER_URL"] = client.settings.broker_url
    env.setdefault("WARREN_LOG_LEVEL", "warning")
    command = [
        sys.executable,
        "-P",
        "-m",
        "warren_engine",
        "--run-id",
        run_id,
        "--parent-pid",
        str(os.getpid()),
        "--env",
        environment,
    ]
    # A session of its own: Ctrl-C in the user's terminal reaches the client, which then
    # stops the app and this engine in order, instead of killing the engine mid-call.
    engine = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, start_new_session=True
    )
    assert engine.stdout is not None
    try:
        line = await asyncio.wait_for(
            asyncio.to_thread(engine.stdout.readline), client.settings.engine_start_timeout
        )
    except BaseException:
        await _stop_engine(engine)
        raise
    if not line.startswith(b"READY"):
        code = engine.poll()
        await _stop_engine(engine)
        raise EngineError(
            f"the engine started for this app did not come up (exit code {code}); "
            "its log is on stderr above"
        )
    return engine


async def _stop_engine(engine: subprocess.Popen[bytes]) -> None:
    if engine.poll() is None:
        engine.terminate()
        try:
            await asyncio.to_thread(engine.wait, ENGINE_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            engine.kill()
            await asyncio.to_thread(engine.wait)
    if engine.stdout is not None:
        with contextlib.suppress(OSError):
            engine.stdout.close()
