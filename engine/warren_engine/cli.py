"""The ``warren`` command line.

::

    warren run path/to/app.py [ENTRYPOINT]     run an app's local entrypoint inside app.run()
    warren deploy path/to/app.py [--name N]    deploy (or redeploy) an app to the daemon
    warren app list | status NAME | stop NAME  deployed apps (--json for machines)
    warren app logs NAME [--since 10m] [-f]    what a deployed app's functions printed
    warren secret create NAME KEY=VALUE ...    a secret the engine keeps (Secret.from_name)
    warren secret list | delete NAME           its secrets (names and keys, never values)
    warren engine                              the engine daemon (also: python -m warren_engine)

``--env ENV`` (or ``WARREN_ENVIRONMENT``) picks the environment everywhere. Each command
builds its settings from its flags over the environment (:mod:`warren.config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import click
import orjson
import warren
from warren import config
from warren.client import event_loop
from warren.config import Settings
from warren.exceptions import WarrenError
from warren.wire.control import (
    CreateSecret,
    DeleteSecret,
    GetAppStatus,
    ListApps,
    ListSecrets,
    Request,
    StopApp,
)

from warren_engine import log_view, logs


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


def find_entrypoint(module: ModuleType, name: str | None) -> tuple[warren.App, Any]:
    apps = [value for value in vars(module).values() if isinstance(value, warren.App)]
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


def command_settings(**flags: Any) -> Settings:
    """The settings a command's ``flags`` (by setting name; None: not given) make over the
    environment; a bad value is a usage error naming its flag or variable."""
    try:
        return Settings.from_environment(flags=flags)
    except WarrenError as exc:
        raise click.UsageError(str(exc)) from exc


def _use_environment(environment: str | None) -> None:
    # What the command calls (Client.connect(), App.environment) asks warren.config.
    config.install(command_settings(environment=environment))


R = TypeVar("R")


def _control(request: Callable[[str], Request[R]]) -> R:
    """Send the request ``request`` makes for the client's environment; its reply."""

    async def call() -> R:
        async with warren.Client.connect() as client:
            return await client.control(request(client.environment))

    try:
        return asyncio.run(call())
    except WarrenError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


_env_option = click.option(
    "--env", "environment", default=None, help="Environment (default: WARREN_ENVIRONMENT or main)."
)


@main.group("secret")
def secret_group() -> None:
    """Secrets the engine keeps for containers: create, list, delete."""


@secret_group.command("create")
@click.argument("name")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@_env_option
def secret_create(name: str, pairs: tuple[str, ...], environment: str | None) -> None:
    """Store (or replace) a secret; functions use it with warren.Secret.from_name(NAME)."""
    _use_environment(environment)
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="KEY=VALUE")
        values[key] = value
    _control(lambda environment: CreateSecret(environment, name, values))
    click.echo(f"stored secret {name} ({', '.join(sorted(values))})")


@secret_group.command("list")
@_env_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def secret_list(environment: str | None, as_json: bool) -> None:
    """Names and keys of the environment's secrets (values are never shown)."""
    _use_environment(environment)
    secrets = _control(ListSecrets).secrets
    if as_json:
        listing = [{"name": secret.name, "keys": list(secret.keys)} for secret in secrets]
        click.echo(orjson.dumps(listing, option=orjson.OPT_INDENT_2).decode())
        return
    for secret in secrets:
        click.echo(f"{secret.name:<32} {', '.join(secret.keys)}")


@secret_group.command("delete")
@click.argument("name")
@_env_option
def secret_delete(name: str, environment: str | None) -> None:
    """Delete a secret (containers already running keep their environment)."""
    _use_environment(environment)
    _control(lambda environment: DeleteSecret(environment, name))
    click.echo(f"deleted secret {name}")


@main.command()
@click.argument("script", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Deploy under this name instead of the app's own.")
@_env_option
def deploy(script: Path, name: str | None, environment: str | None) -> None:
    """Deploy the app defined in SCRIPT to the engine daemon (replacing an earlier deploy)."""
    _use_environment(environment)
    module = load_script(script)
    apps = [value for value in vars(module).values() if isinstance(value, warren.App)]
    if len(apps) != 1:
        found = ", ".join(a.name for a in apps) or "none"
        raise click.UsageError(f"{script} must define exactly one warren.App (found: {found})")
    try:
        apps[0].deploy(name)
    except WarrenError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
    click.echo(f"deployed {name or apps[0].name} to environment {apps[0].environment}")


@main.group("app")
def app_group() -> None:
    """Deployed apps: list, status, stop."""


@app_group.command("list")
@_env_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def app_list(environment: str | None, as_json: bool) -> None:
    """List the apps the engine hosts in the environment."""
    _use_environment(environment)
    apps = _control(ListApps).apps
    if as_json:
        listing = [app.as_dict() for app in apps]
        click.echo(orjson.dumps(listing, option=orjson.OPT_INDENT_2).decode())
        return
    for app in apps:
        kind = "ephemeral" if app.ephemeral else "deployed"
        functions = ", ".join(sorted(app.functions))
        click.echo(f"{app.instance:<32} {kind:<10} {functions}")


@app_group.command("status")
@click.argument("name")
@_env_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def app_status(name: str, environment: str | None, as_json: bool) -> None:
    """Per function: inputs queued, inputs running, containers."""
    _use_environment(environment)
    status = _control(lambda environment: GetAppStatus(environment, name))
    if as_json:
        click.echo(orjson.dumps(status.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{status.app} ({status.environment})")
    click.echo(f"  {'function':<24} {'queued':>8} {'running':>8} {'containers':>10}")
    for tag, stats in sorted(status.functions.items()):
        click.echo(
            f"  {tag:<24} {stats.queued_inputs:>8} {stats.running_inputs:>8} {stats.containers:>10}"
        )


@app_group.command("stop")
@click.argument("name")
@_env_option
def app_stop(name: str, environment: str | None) -> None:
    """Stop a deployed app: its queues go, inputs still queued get an error."""
    _use_environment(environment)
    answered = _control(lambda environment: StopApp(environment, name)).inputs_answered
    click.echo(f"stopped {name} ({answered} queued inputs answered with an error)")


@app_group.command("logs")
@click.argument("name")
@click.option("--function", default=None, help="Only this function's lines.")
@click.option("--since", default=None, help="Only lines this recent: 90s, 10m, 2h, 1d.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_env_option
def app_logs(
    name: str,
    function: str | None,
    since: str | None,
    follow: bool,
    as_json: bool,
    environment: str | None,
) -> None:
    """What a deployed app's functions printed and logged (kept a day, 1 GiB at most)."""
    _use_environment(environment)
    try:
        start = None if since is None else time.time() - log_view.parse_duration(since)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(log_view.show_logs(name, function, start, follow, as_json))
    except WarrenError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@main.command()
@click.argument("script", type=click.Path(path_type=Path))
@click.argument("entrypoint", required=False)
@click.option("--quiet", "-q", is_flag=True, help="Leave out what the functions print.")
def run(script: Path, entrypoint: str | None, quiet: bool) -> None:
    """Run SCRIPT's local entrypoint with its app running (an engine is started if none listens)."""
    module = load_script(script)
    app, fn = find_entrypoint(module, entrypoint)
    try:
        with app.run(show_output=not quiet):
            result = fn()
            if inspect.iscoroutine(result):
                asyncio.run(result)
    except WarrenError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


_engine_options = [
    click.option(
        "--state-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Where deployed apps are recorded (default: WARREN_STATE_DIR, "
        "else ~/.local/state/warren).",
    ),
    click.option(
        "--run-id", default=None, hidden=True, help="Serve one app run on a private control queue."
    ),
    click.option(
        "--parent-pid", type=int, default=None, hidden=True, help="Stop when this process exits."
    ),
    click.option(
        "--log-level",
        default=None,
        help="debug, info, warning, error or critical (WARREN_LOG_LEVEL).",
    ),
    click.option(
        "--join",
        is_flag=True,
        default=False,
        help="Join the engine daemon as an agent node: run the pools it places here.",
    ),
    click.option(
        "--node-name",
        default=None,
        help="This agent node's name (WARREN_NODE_NAME, default: the host name).",
    ),
    click.option("--region", default=None, help="This node's region label (WARREN_REGION)."),
    click.option("--cloud", default=None, help="This node's cloud label (WARREN_CLOUD)."),
    click.option(
        "--gpus",
        default=None,
        help="GPUs this node offers, e.g. 'H100:2' or 'A100,T4' (WARREN_GPUS).",
    ),
    click.option(
        "--http-host",
        default=None,
        help="Where web endpoints are served (WARREN_HTTP_HOST, default 127.0.0.1).",
    ),
    click.option(
        "--http-port",
        type=int,
        default=None,
        help="Their port (WARREN_HTTP_PORT; default 0: any free port).",
    ),
    click.option(
        "--public-url",
        default=None,
        help="Their public base URL, if a proxy serves them (WARREN_PUBLIC_URL).",
    ),
]


def _serve(run_id: str | None, parent_pid: int | None, join: bool, **flags: Any) -> None:
    from warren_engine.daemon.daemon import run_engine
    from warren_engine.nodes.agent import node_name

    settings = command_settings(**flags)  # --http-port over WARREN_HTTP_PORT, and so on
    logs.configure(settings.log_level)
    # A daemon's deployed apps must outlive it; an app run's engine or an agent keeps
    # what it needs in a directory of its own unless told where.
    keeps_state = flags.get("state_dir") is not None or (run_id is None and not join)
    try:
        with event_loop.runner(settings.event_loop) as runner:
            runner.run(
                run_engine(
                    settings,
                    run_id=run_id,
                    parent_pid=parent_pid,
                    state_dir=settings.state_dir if keeps_state else None,
                    join=node_name(settings.node_name) if join else None,
                )
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
    """Run the engine daemon (python -m warren_engine)."""
    _serve(**options)
