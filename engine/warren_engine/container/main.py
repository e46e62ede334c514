"""Entry point of a container process, forked by :mod:`warren_engine.pool.processes`.

The container loads the app's code, connects, and reports on its status pipe (see
:mod:`warren_engine.pipe.pipes`): first ``Ready`` (or ``Failed`` with the reason, which the pool
turns into the error ``app.run()`` or the waiting callers get), then every few tenths
of a second how many inputs it holds, since when it has been idle, and how its inputs
ended (its tally, :mod:`warren_engine.pipe.tally`), and once more as it stops. It stops when
its lifeline pipe closes, that is when the engine is gone, however it went.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import structlog
from warren.client import event_loop
from warren.wire.amqp import ConnectionLost
from warren.wire.code_bundle import load_app_code

from warren_engine.container.container import Container, ContainerConfig
from warren_engine.container.limits import apply_limits
from warren_engine.container.log_shipper import LogShipper
from warren_engine.container.mounts import mount_volumes
from warren_engine.container.output import capture
from warren_engine.pipe.gauge import LoadGauge
from warren_engine.pipe.holdings import HoldingTable, slots_for
from warren_engine.pipe.messages import Event, Failed, Ready
from warren_engine.pipe.pipes import EngineLink

log = structlog.get_logger(__name__)

EXIT_BAD_CODE = 3
EXIT_NO_BROKER = 5
STATUS_PERIOD = 0.25


def load_function(config: ContainerConfig) -> Callable[..., Any]:
    """Load the function from the app's stored code, refusing another Python's pickles."""
    for entry in reversed(config.function.sys_path):
        if entry not in sys.path and os.path.isdir(entry):
            sys.path.insert(0, entry)
    with open(config.function.code_path, "rb") as handle:
        return load_app_code(handle.read())[config.function.spec.tag]


def _failure(exc: BaseException) -> Failed:
    return Failed(type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))


def forked_main(
    config: ContainerConfig,
    status: Connection,
    replies: Connection,
    lifeline: Connection,
    holdings: Any,
    gauge: Any,
) -> None:
    """Run one container (the target of the forked process)."""
    os.dup2(2, 1)  # what bypasses sys.stdout goes where the engine's logs go, not to a pipe
    from warren_engine import logs

    logs.configure(config.function.settings.log_level)  # bound to the real stderr
    output = LogShipper(
        config.function.instance,
        config.function.spec.tag,
        config.container_id,
        config.function.settings.log_rate,
    )
    capture(output)  # before the code loads: what its import prints is shipped too
    for name, value in config.environ.items():  # env= and secrets=, before the code loads
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    link = EngineLink(status, replies)
    if config.core is not None:  # before any thread starts: they keep the affinity
        os.sched_setaffinity(0, {config.core})
    try:
        mount_volumes(config.volumes)
        apply_limits(config.function.spec.cpu, config.function.spec.memory)
        fn = load_function(config)
    except BaseException as exc:
        log.error("container_refused_code", reason=str(exc), container=config.container_id)
        link.send(_failure(exc))
        sys.exit(EXIT_BAD_CODE)
    table = HoldingTable(slots_for(config.function.spec.max_inputs), holdings)
    with event_loop.runner(config.function.settings.event_loop) as runner:
        runner.run(_serve(config, fn, link, lifeline, table, output, LoadGauge(gauge)))


async def _serve(
    config: ContainerConfig,
    fn: Callable[..., Any],
    link: EngineLink,
    lifeline: Connection,
    holdings: HoldingTable,
    output: LogShipper,
    gauge: LoadGauge,
) -> None:
    loop = asyncio.get_running_loop()
    link.attach(loop)

    def send(event: Event) -> None:
        try:
            link.send(event)
        except OSError:
            container.request_stop()  # the engine is gone

    container = Container(
        config, fn, link, holdings, on_ready=lambda: send(Ready()), output=output, gauge=gauge
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, container.request_stop)
    loop.add_reader(lifeline.fileno(), container.request_stop)  # readable only at EOF
    reporter = loop.create_task(_report(container, send))
    try:
        await container.run()
    except (ConnectionLost, OSError, TimeoutError) as exc:
        # Not the code's fault (a node cut off from the broker starts containers that
        # cannot connect): an exit the pool backs off from, not a failure to load, which
        # would fail the queued inputs.
        log.warning("container_broker_unreachable", reason=f"{type(exc).__name__}: {exc}")
        raise SystemExit(EXIT_NO_BROKER) from exc
    except Exception as exc:
        send(_failure(exc))
        raise
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        send(container.status())  # the last outcomes, for the engine's metrics


async def _report(container: Container, send: Callable[[Event], None]) -> None:
    last: tuple[int, float, int, int] | None = None
    while True:
        await asyncio.sleep(STATUS_PERIOD)
        now = (
            container.held,
            container.last_active,
            container.messages_received,
            container.tally.outcomes,
        )
        if now != last:
            send(container.status())
            last = now
