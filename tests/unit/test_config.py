"""Settings: every variable checked once with an error naming it, flags over the
environment, and warren.config the only reader of WARREN_* variables."""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from warren import config
from warren.config import VARIABLES, Number, Settings, redacted_url
from warren.exceptions import ConfigError, InvalidError
from warren.wire.control import AppListing, Request
from warren_engine import cli, logs
from warren_engine.daemon import daemon
from warren_engine.pool.node_capacity import Node

ROOT = Path(__file__).resolve().parents[2]

# Every numeric variable, with the values it refuses beyond those every number refuses
# (not a number, NaN, infinities, negatives).
NUMERIC: dict[str, tuple[str, ...]] = {
    "WARREN_RESULT_QUEUE_EXPIRY": ("0",),
    "WARREN_ENGINE_START_TIMEOUT": ("0",),
    "WARREN_RESULT_RETENTION": ("0",),
    "WARREN_STOP_GRACE": ("0",),
    "WARREN_MAX_MESSAGE_SIZE": ("0", "4095", "1.5"),
    "WARREN_MESSAGE_EXPIRY": ("0",),
    "WARREN_CRASH_LIMIT": ("0", "2.5"),
    "WARREN_BROKER_CONSUMER_TIMEOUT": ("0",),
    "WARREN_RECONNECT_TIMEOUT": ("0",),
    "WARREN_HTTP_PORT": ("65536", "80.5"),
    "WARREN_NODE_CPUS": ("0",),
    "WARREN_NODE_MEMORY": ("0", "1.5"),
    "WARREN_LOG_RATE": ("1023", "2048.5"),
}
NOT_NUMBERS = ("abc", "nan", "inf", "-inf", "1e999", "-1")


@pytest.fixture(autouse=True)
def no_installed_settings() -> Iterator[None]:
    yield
    config.install(None)


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, extra in NUMERIC.items() for value in (*NOT_NUMBERS, *extra)],
)
def test_a_bad_numeric_variable_is_refused_naming_the_variable_and_value(
    name: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environment({name: value})
    assert name in str(caught.value)
    assert repr(value) in str(caught.value)
    assert isinstance(caught.value, InvalidError)


def test_the_numeric_list_above_is_every_numeric_variable_declared() -> None:
    declared = {variable.name for variable in VARIABLES if isinstance(variable.check, Number)}
    assert declared == set(NUMERIC)


def test_the_module_docstring_lists_every_variable() -> None:
    assert config.__doc__ is not None
    listed = {line.split()[0] for line in config.__doc__.splitlines() if line.startswith("WARREN_")}
    assert listed == {variable.name for variable in VARIABLES}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WARREN_QUEUE_TYPE", "stream"),
        ("WARREN_EVENT_LOOP", "trio"),
        ("WARREN_LOG_LEVEL", "loud"),
        ("WARREN_PIN_CONTAINERS", "maybe"),
        ("WARREN_HTTP_DEBUG", "2"),
        ("WARREN_METRICS_PUBLIC", "public"),
        ("WARREN_ENVIRONMENT", "has.dot"),
        ("WARREN_NODE_NAME", "a b"),
    ],
)
def test_a_bad_word_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_environment({name: value})


def test_good_values_are_typed_and_unset_or_empty_ones_keep_their_default() -> None:
    settings = Settings.from_environment(
        {
            "WARREN_HTTP_PORT": "8080",
            "WARREN_NODE_CPUS": "2.5",
            "WARREN_NODE_MEMORY": "512",
            "WARREN_LOG_LEVEL": "DEBUG",
            "WARREN_PIN_CONTAINERS": "off",
            "WARREN_HTTP_DEBUG": "yes",
            "WARREN_METRICS_PUBLIC": "on",
            "WARREN_STOP_GRACE": "",
            "XDG_CONFIG_HOME": "/etc/xdg",
            "XDG_STATE_HOME": "/var/state",
        }
    )
    assert (settings.http_port, settings.node_cpus, settings.node_memory) == (8080, 2.5, 512)
    assert isinstance(settings.http_port, int) and isinstance(settings.node_cpus, float)
    assert (settings.log_level, settings.pin_containers, settings.http_debug) == (
        "debug",
        False,
        True,
    )
    assert settings.metrics_public and not Settings().metrics_public
    assert settings.stop_grace == Settings().stop_grace
    assert settings.config_dir == Path("/etc/xdg/warren")
    assert settings.state_dir == Path("/var/state/warren")
    assert settings.container_broker_url == settings.broker_url


def test_flags_override_the_environment_and_a_bad_flag_is_named() -> None:
    environ = {"WARREN_HTTP_PORT": "1", "WARREN_REGION": "us", "WARREN_CLOUD": "gcp"}
    settings = Settings.from_environment(
        environ, flags={"http_port": 8080, "region": "eu", "cloud": None}
    )
    assert (settings.http_port, settings.region, settings.cloud) == (8080, "eu", "gcp")
    with pytest.raises(ConfigError, match="--http-port"):
        Settings.from_environment(environ, flags={"http_port": -1})
    with pytest.raises(InvalidError, match="no setting is named colour"):
        Settings.from_environment(environ, flags={"colour": "red"})


def test_secrets_are_never_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environment({"WARREN_BROKER_URL": "http://engine:hunter2@host/"})
    assert "hunter2" not in str(caught.value) and "engine:***@host" in str(caught.value)
    settings = Settings.from_environment(
        {
            "WARREN_SECRET_KEY": "s" * 32,
            "WARREN_BROKER_URL": "amqp://engine:hunter2@host/",
            "WARREN_DASHBOARD_TOKEN": "t0ken-of-the-dashboard",
        }
    )
    assert "hunter2" not in repr(settings) and "s" * 32 not in repr(settings)
    assert settings.dashboard_token == "t0ken-of-the-dashboard"
    assert "t0ken" not in repr(settings)
    assert redacted_url("amqp://u:p@ss@host/") == "amqp://u:***@host/"
    assert redacted_url("amqp://host/") == "amqp://host/"


def test_containers_get_the_settings_without_the_engines_credentials() -> None:
    engine = Settings.from_environment(
        {
            "WARREN_BROKER_URL": "amqp://engine:e@host/",
            "WARREN_CONTAINER_BROKER_URL": "amqp://container:c@host/",
            "WARREN_FUNCTION_BROKER_URL": "amqp://caller:f@host/",
            "WARREN_CRASH_LIMIT": "7",
            "WARREN_SECRET_KEY_FILE": "/run/key",
            "WARREN_DASHBOARD_TOKEN": "t0ken-of-the-dashboard",
        }
    )
    shipped = engine.for_containers()
    assert "engine:e" not in str(dataclasses.asdict(shipped))
    assert "t0ken" not in str(dataclasses.asdict(shipped))  # a function must not read the pages
    assert shipped.broker_url == "amqp://container:c@host/"
    assert shipped.function_broker_url is None
    assert (shipped.crash_limit, shipped.secret_key_file) == (7, Path("/run/key"))


def test_settings_reads_the_environment_until_an_entry_point_installs_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WARREN_ENVIRONMENT", "from-env")
    assert config.settings().environment == "from-env"
    config.install(Settings(environment="installed"))
    assert config.settings().environment == "installed"


def test_a_bad_gpu_list_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="WARREN_GPUS"):
        Node.from_settings(Settings(gpus="H100:x"))
    node = Node.from_settings(Settings(gpus="H100:2,T4", node_cpus=3.0, region="eu"))
    assert (node.gpus, node.cpus, node.region) == ({"H100": 2, "T4": 1}, 3.0, "eu")


# -- the command line ----------------------------------------------------------------------


@pytest.fixture
def engine_started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Settings, dict[str, Any]]]:
    """What the engine command would have started the engine with (it starts nothing)."""
    started: list[tuple[Settings, dict[str, Any]]] = []

    async def run_engine(settings: Settings, **kwargs: Any) -> None:
        started.append((settings, kwargs))

    monkeypatch.setattr(daemon, "run_engine", run_engine)
    monkeypatch.setattr(logs, "configure", lambda level: None)
    return started


def test_the_engine_commands_flags_override_the_environment_without_writing_it(
    engine_started: list[tuple[Settings, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Given an environment that says one thing
    for name, value in {
        "WARREN_HTTP_PORT": "1",
        "WARREN_REGION": "us",
        "WARREN_GPUS": "T4",
        "WARREN_LOG_LEVEL": "error",
        "WARREN_STATE_DIR": str(tmp_path / "env-state"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WARREN_CLOUD", raising=False)
    before = dict(os.environ)
    # When the engine command's flags say another
    args = ["engine", "--http-port", "8080", "--region", "eu", "--log-level", "debug"]
    result = CliRunner().invoke(cli.main, [*args, "--state-dir", str(tmp_path / "flag")])
    # Then the flags win, the environment fills in the rest, and it is left as it was
    assert result.exit_code == 0, result.output
    [(settings, kwargs)] = engine_started
    assert (settings.http_port, settings.region, settings.log_level) == (8080, "eu", "debug")
    assert (settings.gpus, settings.cloud) == ("T4", None)
    assert kwargs["state_dir"] == tmp_path / "flag"
    assert dict(os.environ) == before


def test_the_engine_keeps_state_where_the_environment_says_unless_it_serves_one_run(
    engine_started: list[tuple[Settings, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("WARREN_STATE_DIR", str(tmp_path))
    assert CliRunner().invoke(cli.main, ["engine"]).exit_code == 0
    assert CliRunner().invoke(cli.main, ["engine", "--run-id", "r1"]).exit_code == 0
    assert [kwargs["state_dir"] for _, kwargs in engine_started] == [tmp_path, None]


def test_a_bad_engine_flag_is_a_usage_error_naming_the_flag(
    engine_started: list[tuple[Settings, dict[str, Any]]],
) -> None:
    result = CliRunner().invoke(cli.main, ["engine", "--http-port", "-1"])
    assert result.exit_code == 2 and "--http-port" in result.output
    assert engine_started == []


def test_the_env_flag_reaches_what_a_command_calls_without_writing_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WARREN_ENVIRONMENT", "from-env")
    seen: list[str] = []

    def control(request: Callable[[str], Request[Any]]) -> AppListing:
        seen.append(config.settings().environment)
        return AppListing(apps=())

    monkeypatch.setattr(cli, "_control", control)
    result = CliRunner().invoke(cli.main, ["app", "list", "--env", "staging"])
    assert result.exit_code == 0, result.output
    assert seen == ["staging"]
    assert os.environ["WARREN_ENVIRONMENT"] == "from-env"


# -- one reader ----------------------------------------------------------------------------


def _is_environ(node: ast.expr) -> bool:
    """``os.environ`` (or a bare ``environ``)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id == "environ"


def _names_warren_variable(node: ast.expr) -> bool:
    """A literal ``WARREN_...`` name, or one built from a literal ``WARREN_...`` prefix."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value.startswith("WARREN_")
    if isinstance(node, ast.BinOp):
        return _names_warren_variable(node.left)
    if isinstance(node, ast.JoinedStr) and node.values:
        return _names_warren_variable(node.values[0])
    return False


def _reads(node: ast.expr) -> bool:
    """Whether ``node`` reads a ``WARREN_*`` variable from the environment."""
    if isinstance(node, ast.Call):
        func = node.func
        if not node.args or not _names_warren_variable(node.args[0]):
            return False
        if isinstance(func, ast.Name):
            return func.id == "getenv"
        return isinstance(func, ast.Attribute) and (
            func.attr == "getenv"
            or (_is_environ(func.value) and func.attr in {"get", "pop", "setdefault"})
        )
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return _is_environ(node.value) and _names_warren_variable(node.slice)
    if isinstance(node, ast.Compare):
        return _names_warren_variable(node.left) and any(map(_is_environ, node.comparators))
    return False


def environment_reads(source: str) -> list[int]:
    """Lines of ``source`` that read a ``WARREN_*`` variable from the environment
    (writing one, for a child process or the user's code, is not reading it)."""
    found = ast.walk(ast.parse(source))
    return sorted(node.lineno for node in found if isinstance(node, ast.expr) and _reads(node))


def test_the_reader_check_finds_each_way_of_reading_a_variable() -> None:
    source = (
        'os.environ.get("WARREN_A")\n'
        'os.environ["WARREN_B"]\n'
        'os.getenv("WARREN_C")\n'
        '"WARREN_D" in os.environ\n'
        'environ.get(f"WARREN_E_{x}")\n'
        'os.environ["WARREN_F"] = "written, not read"\n'
        'os.environ.get("HOME")\n'
    )
    assert environment_reads(source) == [1, 2, 3, 4, 5]


def test_no_module_but_warren_config_reads_a_warren_variable() -> None:
    allowed = ROOT / "sdk" / "warren" / "config.py"
    files = sorted({*ROOT.joinpath("sdk").rglob("*.py"), *ROOT.joinpath("engine").rglob("*.py")})
    assert allowed in files
    readers = {
        str(path.relative_to(ROOT)): found
        for path in files
        if path != allowed and (found := environment_reads(path.read_text()))
    }
    assert readers == {}


def test_an_engine_with_an_unusable_gpu_list_fails_when_it_is_made_before_any_io() -> None:
    # Given settings whose WARREN_GPUS cannot be a list of GPUs
    bad = Settings.from_environment({"WARREN_GPUS": "H100:many"})
    # When an engine is made from them, Then it refuses at once, naming the variable
    with pytest.raises(ConfigError, match="WARREN_GPUS"):
        daemon.Engine(bad)


def test_the_dashboard_token_is_a_secret_checked_for_length_and_kept_from_containers() -> None:
    # A short token is refused without being shown
    with pytest.raises(ConfigError, match="WARREN_DASHBOARD_TOKEN must be at least 16") as caught:
        Settings.from_environment({"WARREN_DASHBOARD_TOKEN": "hunter2"})
    assert "hunter2" not in str(caught.value)
    # A good one is in the settings, not in their repr, and not in a container's
    token = "t0ken-of-the-dashboard-0123456789"
    settings = Settings.from_environment({"WARREN_DASHBOARD_TOKEN": token})
    assert settings.dashboard_token == token and token not in repr(settings)
    assert settings.for_containers().dashboard_token is None
    # And an engine takes it out of the environment its containers inherit
    environ = {"WARREN_DASHBOARD_TOKEN": token, "WARREN_ENVIRONMENT": "dev"}
    config.hide_engine_only_variables(environ)
    assert environ == {"WARREN_ENVIRONMENT": "dev"}
