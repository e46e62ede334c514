"""Entry point of a container process: ``python -m engine.container_main``.

The pool writes the container's configuration to its stdin (msgpack). The container
loads the app's code, connects, and reports on the first line of stdout: ``READY``, or
``FAILED {json}`` with the reason (the pool turns that into the error ``app.run()``
raises). After that line, stdout points at stderr, so the user's prints land with the
engine's logs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

import orjson
import structlog

from engine.container import Container, ContainerConfig
from sdk.codec import unpackb
from sdk.shipping import load_app_code

log = structlog.get_logger(__name__)

EXIT_BAD_CODE = 3


def load_function(config: ContainerConfig) -> Callable[..., Any]:
    """Load the function from the app's stored code, refusing another Python's pickles."""
    for entry in reversed(config.sys_path):
        if entry not in sys.path and os.path.isdir(entry):
            sys.path.insert(0, entry)
    with open(config.code_path, "rb") as handle:
        return load_app_code(handle.read())[config.spec.tag]


def report(status: str, detail: dict[str, str] | None = None) -> None:
    """Tell the pool (first line on stdout) whether this container is ready, or why not.

    Afterwards stdout is pointed at stderr, so the user's prints land with the logs.
    """
    line = status if detail is None else f"{status} {orjson.dumps(detail).decode()}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    os.dup2(2, 1)


def _failure(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def main() -> None:
    """Entry point of a container process (``python -m engine.container``)."""
    from engine import logs

    logs.configure()
    config = ContainerConfig.from_wire(unpackb(sys.stdin.buffer.read()))
    try:
        fn = load_function(config)
    except BaseException as exc:
        log.error("container_refused_code", reason=str(exc), container=config.container_id)
        report("FAILED", _failure(exc))
        sys.exit(EXIT_BAD_CODE)
    asyncio.run(_serve(config, fn))


async def _serve(config: ContainerConfig, fn: Callable[..., Any]) -> None:
    container = Container(config, fn, on_ready=lambda: report("READY"))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, container.request_stop)
    try:
        await container.run()
    except Exception as exc:
        report("FAILED", _failure(exc))
        raise


if __name__ == "__main__":
    main()
