"""The ``warren`` command line.

::

    warren run path/to/app.py[::ENTRYPOINT] [--PARAM VALUE ...]
                                               run an app's local entrypoint inside app.run()
    warren serve path/to/app.py                run an app, reloading it when its files change
    warren deploy path/to/app.py [--name N]    deploy (or redeploy) an app; its web URLs
    warren app list | status NAME | stop NAME  deployed apps (--json for machines)
    warren app logs NAME [--since 10m] [-f]    what a deployed app's functions printed
    warren container list [--app NAME]         containers: id, function, node, pid, inputs, uptime
    warren container stop ID                   stop one gracefully (its pool replaces it if needed)
    warren secret create NAME KEY=VALUE ...    a secret the engine keeps (Secret.from_name)
    warren secret list | delete NAME           its secrets (names and keys, never values)
    warren dead list | show ID | retry ID | purge
                                               dead-lettered inputs: see why, run again, drop
    warren engine                              the engine daemon (also: python -m warren_engine)
    warren --version                           the installed version

``--env ENV`` (or ``WARREN_ENVIRONMENT``) picks the environment everywhere. Each command
builds its settings from its flags over the environment (:mod:`warren.config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import click
import orjson
import warren
from warren import config
from warren.client import event_loop
from warren.client.app_run import PackedApp, deploy_app
from warren.config import Settings
from warren.exceptions import WarrenError
from warren.wire.control import (
    AppDeployed,
    ContainerInfo,
    CreateSecret,
    DeleteSecret,
    GetAppStatus,
    ListApps,
    ListContainers,
    ListDeadInputs,
    ListSecrets,
    PurgeDeadInputs,
    Request,
    RetryDeadInput,
    ShowDeadInput,
    StopApp,
    StopContainer,
)

from warren_engine import dead_view, log_view, logs
from warren_engine.user_script import load_script, single_app


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


def split_target(target: str) -> tuple[Path, str | None]:
    """``app.py::main`` is the script ``app.py`` and its entrypoint ``main``."""
    script, sep, name = target.partition("::")
    if sep and not name:
        raise click.BadParameter(f"{target!r} names no entrypoint after '::'", param_hint="SCRIPT")
    return Path(script), name or None


# Entrypoint parameters the command line can give, by annotation (unannotated: str).
_OPTION_TYPES: dict[Any, click.ParamType[Any]] = {
    int: click.INT,
    float: click.FLOAT,
    str: click.STRING,
    inspect.Parameter.empty: click.STRING,
}


def _without_none(annotation: Any) -> Any:
    """``int`` for ``int | None`` (None is then the default the command line leaves)."""
    if get_origin(annotation) in (Union, UnionType):
        kinds = [kind for kind in get_args(annotation) if kind is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    return annotation


def entrypoint_option(parameter: inspect.Parameter) -> click.Option:
    """The option that gives ``parameter``: ``--name VALUE``, or ``--flag/--no-flag``
    (``my_name`` is ``--my-name``, or ``--my_name``); required if it has no default."""
    spellings = dict.fromkeys([parameter.name.replace("_", "-"), parameter.name])
    # Click takes an explicit default=None for a value, so a required option has none.
    given: dict[str, Any] = {"required": True}
    if parameter.default is not inspect.Parameter.empty:
        given = {"default": parameter.default, "show_default": True}
    if parameter.annotation is bool:
        flags = [f"--{name}/--no-{name}" for name in spellings]
        return click.Option([parameter.name, *flags], is_flag=True, **given)
    kind = _OPTION_TYPES.get(_without_none(parameter.annotation))
    if kind is None:
        raise click.UsageError(
            f"entrypoint parameter {parameter.name!r} is annotated {parameter.annotation!r}: "
            "the command line gives only int, float, str and bool"
        )
    return click.Option([parameter.name, *(f"--{name}" for name in spellings)], type=kind, **given)


def entrypoint_command(name: str, fn: Callable[..., Any]) -> click.Command:
    """A command whose options are ``fn``'s parameters; invoked, it returns their values."""
    options: list[click.Parameter] = []
    for parameter in inspect.signature(fn, eval_str=True).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise click.UsageError(
                f"entrypoint parameter {parameter.name!r} is positional-only: "
                "the command line passes parameters by name"
            )
        options.append(entrypoint_option(parameter))
    return click.Command(name, params=options, callback=lambda **kwargs: kwargs, help=fn.__doc__)


def entrypoint_arguments(prog: str, fn: Callable[..., Any], args: list[str]) -> dict[str, Any]:
    """``fn``'s keyword arguments from the command line's ``args``; a bad or unknown
    option is a usage error naming it (``prog`` is how its usage line starts)."""
    command = entrypoint_command(prog, fn)
    with command.make_context(prog, args) as ctx:
        kwargs: dict[str, Any] = command.invoke(ctx)
    return kwargs


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"warren {importlib.metadata.version('warren')}")
    ctx.exit()


@click.group()
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the installed version and exit.",
)
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


def _echo_json(value: object) -> None:
    """What a ``--json`` command prints: indented JSON."""
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


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
        _echo_json(listing)
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
    packed = single_app(load_script(script), script).code().pack()
    deployed = _deploy(packed, name)
    status = deployed.status
    click.echo(f"deployed {status.app} to environment {status.environment}")
    for url in packed.web_urls(status.instance, deployed.web_base):
        click.echo(f"  {url}")


def _deploy(app: PackedApp, name: str | None) -> AppDeployed:
    async def call() -> AppDeployed:
        async with warren.Client.connect() as client:
            return await deploy_app(client, app, name)

    try:
        return asyncio.run(call())
    except WarrenError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


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
        _echo_json(listing)
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
    """Per function, now: inputs queued, running, held by containers (running or about to
    start), and containers (by node when several run it); the engine nodes and which
    leads."""
    _use_environment(environment)
    status = _control(lambda environment: GetAppStatus(environment, name))
    if as_json:
        _echo_json(status.as_dict())
        return
    click.echo(f"{status.app} ({status.environment})")
    if status.nodes:
        click.echo(f"  engine nodes: {', '.join(status.nodes)}; leader: {status.leader or 'none'}")
    click.echo(f"  {'function':<24} {'queued':>8} {'running':>8} {'held':>8} {'containers':>10}")
    for tag, stats in sorted(status.functions.items()):
        spread = ", ".join(f"{node} {count}" for node, count in stats.nodes.items() if count)
        click.echo(
            f"  {tag:<24} {stats.queued_inputs:>8} {stats.running_inputs:>8} "
            f"{stats.held_inputs:>8} {stats.containers:>10}"
            + (f"  ({spread})" if len(stats.nodes) > 1 and spread else "")
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


@main.group("container")
def container_group() -> None:
    """Containers of the environment's apps, on every node: list, stop."""


def format_uptime(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``3d04h``: two units at most."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def container_rows(containers: tuple[ContainerInfo, ...]) -> list[str]:
    """The table ``warren container list`` prints: a header, then a line per container."""
    header = ("ID", "APP", "FUNCTION", "NODE", "PID", "RUNNING", "HELD", "STATE", "UPTIME")
    cells = [header] + [
        (
            info.id,
            info.app,
            info.function,
            info.node,
            str(info.pid),
            str(info.running_inputs),
            str(info.held_inputs),
            info.state,
            format_uptime(info.uptime),
        )
        for info in containers
    ]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    numeric = {4, 5, 6}
    return [
        "  ".join(
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]


@container_group.command("list")
@click.option("--app", "app_name", default=None, help="Only this app's containers.")
@_env_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def container_list(app_name: str | None, environment: str | None, as_json: bool) -> None:
    """One line per container: its id (the one its log lines carry), app, function, node,
    pid, inputs running and held, state and uptime."""
    _use_environment(environment)
    listing = _control(lambda environment: ListContainers(environment, app_name))
    for error in listing.errors:
        click.echo(f"warning: {error}", err=True)
    if as_json:
        _echo_json([info.as_dict() for info in listing.containers])
        return
    for row in container_rows(listing.containers):
        click.echo(row)


@container_group.command("stop")
@click.argument("container_id", metavar="ID")
@_env_option
def container_stop(container_id: str, environment: str | None) -> None:
    """Stop a container gracefully: it takes no new input, its running inputs finish (the
    ones it held and had not started go back to the queue), and its pool starts another
    if the load still needs one."""
    _use_environment(environment)
    info = _control(lambda environment: StopContainer(environment, container_id))
    click.echo(
        f"stopping container {info.id} of {info.app}.{info.function} on {info.node} "
        f"(pid {info.pid}, {info.running_inputs} inputs running)"
    )


@main.group("dead")
def dead_group() -> None:
    """Dead-lettered inputs (crash limit, failed checks, expired): list, show, retry, purge."""


@dead_group.command("list")
@_env_option
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Read at most this many messages of the queue.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dead_list(environment: str | None, limit: int, as_json: bool) -> None:
    """The environment's dead-letter queue: id, function, since when, size, reason."""
    _use_environment(environment)
    listing = _control(lambda environment: ListDeadInputs(environment, limit))
    if as_json:
        _echo_json({"inputs": [dead.as_dict() for dead in listing.inputs], "total": listing.total})
        return
    for line in dead_view.listing_lines(listing, config.settings().environment):
        click.echo(line)


@dead_group.command("show")
@click.argument("dead_id", metavar="ID")
@_env_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dead_show(dead_id: str, environment: str | None, as_json: bool) -> None:
    """One dead input: its properties, reason, and its arguments unless pickled."""
    _use_environment(environment)
    shown = _control(lambda environment: ShowDeadInput(environment, dead_id))
    if as_json:
        _echo_json(shown.as_dict())
        return
    for line in dead_view.detail_lines(shown):
        click.echo(line)


@dead_group.command("retry")
@click.argument("dead_id", metavar="ID")
@_env_option
def dead_retry(dead_id: str, environment: str | None) -> None:
    """Send a dead input, still signed as it was, to its function's current queue."""
    _use_environment(environment)
    retried = _control(lambda environment: RetryDeadInput(environment, dead_id))
    goes = "its spawned call gets the new result" if retried.stored_result else "it runs again"
    click.echo(f"retried {retried.id} on {retried.queue}: {goes}")


@dead_group.command("purge")
@_env_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def dead_purge(environment: str | None, yes: bool) -> None:
    """Remove every dead-lettered input of the environment, for good."""
    _use_environment(environment)
    target = config.settings().environment
    if not yes:
        click.confirm(f"remove every dead-lettered input of environment {target!r}?", abort=True)
    purged = _control(PurgeDeadInputs).purged
    click.echo(f"purged {purged} dead-lettered inputs from environment {target!r}")


# Everything after SCRIPT is the entrypoint's (--help included): run's options come first.
@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("target", metavar="SCRIPT[::ENTRYPOINT]")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[ENTRYPOINT] [--PARAM VALUE]...")
@click.option("--quiet", "-q", is_flag=True, help="Leave out what the functions print.")
@click.pass_context
def run(ctx: click.Context, target: str, args: tuple[str, ...], quiet: bool) -> None:
    """Run SCRIPT's local entrypoint with its app running (an engine is started if none
    listens). The entrypoint's parameters are its options: def main(x: int, flag: bool =
    False) takes --x 5 --flag (see: warren run SCRIPT --help)."""
    script, entrypoint = split_target(target)
    rest = list(args)
    if entrypoint is None and rest and not rest[0].startswith("-"):
        entrypoint = rest.pop(0)  # the older form: warren run app.py main
    module = load_script(script)
    app, fn = find_entrypoint(module, entrypoint)
    name = next(n for n, entry in app.local_entrypoints.items() if entry is fn)
    prog = f"{ctx.command_path} {script}::{name}"
    kwargs = entrypoint_arguments(prog, fn, rest)
    try:
        with app.run(show_output=not quiet), warren.enable_output():
            result = fn(**kwargs)
            if inspect.iscoroutine(result):
                asyncio.run(result)
    except WarrenError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@main.command()
@click.argument("script", type=click.Path(path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="Leave out what the functions print.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop serving after this many seconds (default: until Ctrl-C).",
)
@_env_option
def serve(script: Path, quiet: bool, timeout: float | None, environment: str | None) -> None:
    """Run the app in SCRIPT and reload it whenever a Python file in its directory
    changes: new inputs run the new code, web endpoints keep their URLs."""
    from warren_engine.dev_server import DevServer

    settings = command_settings(environment=environment)
    config.install(settings)
    if not script.is_file():
        raise click.BadParameter(f"no such file: {script}", param_hint="SCRIPT")
    server = DevServer(
        script, settings, show_output=not quiet, say=lambda line: click.echo(line, err=True)
    )

    async def serve_for() -> None:
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                await server.run()
        except TimeoutError:
            if not deadline.expired():
                raise

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_for())
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
        "--env",
        "engine_environments",
        default=None,
        help="The environments this node serves, comma-separated "
        "(WARREN_ENGINE_ENVIRONMENTS; default: WARREN_ENVIRONMENT's, main).",
    ),
    click.option(
        "--node-name",
        default=None,
        help="This node's name, unique among the nodes (WARREN_NODE_NAME; default: "
        "the host name and the process id).",
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
        help="Their port (WARREN_HTTP_PORT; default 0: the daemon's last one, else any free port).",
    ),
    click.option(
        "--public-url",
        default=None,
        help="Their public base URL, if a proxy serves them (WARREN_PUBLIC_URL).",
    ),
]


def _serve(run_id: str | None, parent_pid: int | None, **flags: Any) -> None:
    from warren_engine.daemon.daemon import run_engine

    settings = command_settings(**flags)  # --http-port over WARREN_HTTP_PORT, and so on
    logs.configure(settings.log_level)
    # A daemon's state (code it runs, secrets, the dashboard's token, its HTTP port) is
    # kept; an app run's engine keeps what it needs in a directory of its own.
    keeps_state = flags.get("state_dir") is not None or run_id is None
    try:
        with event_loop.runner(settings.event_loop) as runner:
            runner.run(
                run_engine(
                    settings,
                    run_id=run_id,
                    parent_pid=parent_pid,
                    state_dir=settings.state_dir if keeps_state else None,
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
