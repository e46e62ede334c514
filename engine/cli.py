"""The ``warren`` command line.

::

    warren run path/to/app.py [ENTRYPOINT]   run an app's local entrypoint inside app.run()
    warren engine                            the engine daemon (also: python -m engine)
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click

import sdk
from engine import logs
from sdk.config import settings
from sdk.exceptions import WarrenError


def load_script(path: Path) -> ModuleType:
    """Import a user's script as a module named after its file."""
    if not path.is_file():
        raise click.BadParameter(f"no such file: {path}", param_hint="SCRIPT")
    name = path.stem.replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise click.BadParameter(f"cannot import {path} as Python", param_hint="SCRIPT")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))
    spec.loader.exec_module(module)
    return module


def find_entrypoint(module: ModuleType, name: str | None) -> tuple[sdk.App, Any]:
    apps = [value for value in vars(module).values() if isinstance(value, sdk.App)]
    found = [(app, n, fn) for app in apps for n, fn in app.local_entrypoints.items()]
    if name is not None:
        found = [entry for entry in found if entry[1] == name]
    if not found:
        what = f"named {name!r}" if name else "(@app.local_entrypoint())"
        raise click.UsageError(f"{module.__name__} has no local entrypoint {what}")
    if len(found) > 1:
        names = ", ".join(sorted(n for _, n, _ in found))
        raise click.UsageError(
            f"{module.__name__} has several local entrypoints; pick one: {names}"
        )
    app, _, fn = found[0]
    return app, fn


@click.group()
def main() -> None:
    """Warren: run Python functions on container pools behind RabbitMQ."""


@main.command()
@click.argument("script", type=click.Path(path_type=Path))
@click.argument("entrypoint", required=False)
def run(script: Path, entrypoint: str | None) -> None:
    """Run SCRIPT's local entrypoint with its app running (an engine is started if none listens)."""
    module = load_script(script)
    app, fn = find_entrypoint(module, entrypoint)
    try:
        with app.run():
            result = fn()
            if inspect.iscoroutine(result):
                asyncio.run(result)
    except WarrenError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


_engine_options = [
    click.option("--state-dir", type=click.Path(path_type=Path), default=None,
                 help="Where deployed apps' code is kept (default: a temporary directory)."),
    click.option("--run-id", default=None, hidden=True,
                 help="Serve one app run on a private control queue."),
    click.option("--parent-pid", type=int, default=None, hidden=True,
                 help="Stop when this process exits."),
    click.option("--log-level", default=None, help="debug, info, warning or error."),
]  # fmt: skip


def _serve(
    state_dir: Path | None, run_id: str | None, parent_pid: int | None, log_level: str | None
) -> None:
    from engine.daemon import run_engine

    logs.configure(log_level)
    try:
        asyncio.run(
            run_engine(settings(), run_id=run_id, parent_pid=parent_pid, state_dir=state_dir)
        )
    except WarrenError as exc:
        raise click.ClickException(str(exc)) from exc


def _with_engine_options(command: Any) -> Any:
    for option in reversed(_engine_options):
        command = option(command)
    return command


@main.command("engine")
@_with_engine_options
def engine_command(**options: Any) -> None:
    """Run the engine daemon: it hosts apps and their container pools."""
    _serve(**options)


@click.command("engine")
@_with_engine_options
def engine_main(**options: Any) -> None:
    """Run the engine daemon (python -m engine)."""
    _serve(**options)
