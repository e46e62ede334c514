"""The ``warren`` command line.

::

    warren run path/to/app.py [ENTRYPOINT]     run an app's local entrypoint inside app.run()
    warren deploy path/to/app.py [--name N]    deploy (or redeploy) an app to the daemon
    warren app list | status NAME | stop NAME  deployed apps (--json for machines)
    warren secret create NAME KEY=VALUE ...    a secret the engine keeps (Secret.from_name)
    warren secret list | delete NAME           its secrets (names and keys, never values)
    warren engine                              the engine daemon (also: python -m warren_engine)

``--env ENV`` (or ``WARREN_ENVIRONMENT``) picks the environment everywhere.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import click
import orjson
import warren
from warren.client import event_loop
from warren.config import settings
from warren.exceptions import WarrenError
from warren.wire import naming
from warren.wire.control import (
    CreateSecret,
    DeleteSecret,
    GetAppStatus,
    ListApps,
    ListSecrets,
    Request,
    StopApp,
)

from warren_engine import logs


def default_state_dir() -> Path:
    configured = os.environ.get("WARREN_STATE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "warren"


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


def _use_environment(environment: str | None) -> None:
    if environment is not None:
        os.environ["WARREN_ENVIRONMENT"] = naming.check_part("environment", environment)


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
    click.option("--log-level", default=None, help="debug, info, warning or error."),
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

# Engine options that are settings of their own, read from the environment.
_ENVIRONMENT_OPTIONS = {
    "region": "WARREN_REGION",
    "cloud": "WARREN_CLOUD",
    "gpus": "WARREN_GPUS",
    "http_host": "WARREN_HTTP_HOST",
    "http_port": "WARREN_HTTP_PORT",
    "public_url": "WARREN_PUBLIC_URL",
}


def _serve(
    state_dir: Path | None,
    run_id: str | None,
    parent_pid: int | None,
    log_level: str | None,
    join: bool,
    node_name: str | None,
    **environment_options: Any,
) -> None:
    from warren_engine.daemon.daemon import run_engine
    from warren_engine.nodes.agent import node_name as agent_name

    for name, value in environment_options.items():
        if value is not None:
            os.environ[_ENVIRONMENT_OPTIONS[name]] = str(value)
    logs.configure(log_level)
    if state_dir is None and run_id is None and not join:
        state_dir = default_state_dir()  # a daemon's deployed apps must outlive it
    try:
        with event_loop.runner() as runner:
            runner.run(
                run_engine(
                    settings(),
                    run_id=run_id,
                    parent_pid=parent_pid,
                    state_dir=state_dir,
                    join=agent_name(node_name or os.environ.get("WARREN_NODE_NAME"))
                    if join
                    else None,
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
