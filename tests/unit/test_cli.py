"""The command line's own logic: version, entrypoint selection and options, web URLs,
the confirmation a purge asks for."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import click
import pytest
import warren
from click.testing import CliRunner
from warren.wire.control import ContainerInfo, DeadInputsPurged, PurgeDeadInputs
from warren_engine import cli
from warren_engine.user_script import load_script

SCRIPT = '''
import warren

app = warren.App("cli-unit")


@app.function()
@warren.web_endpoint(method="GET")
def hello(name: str) -> str:
    return name


@app.function()
def plain() -> None:
    pass


@app.local_entrypoint()
def main(x: int, name: str = "a", flag: bool = False, ratio: float | None = None) -> None:
    """Say hello."""
'''


def entrypoint(x: int, name: str = "a", flag: bool = False, ratio: float | None = None) -> None:
    """Say hello."""


def arguments(*args: str) -> dict[str, object]:
    return cli.entrypoint_arguments("warren run app.py::main", entrypoint, list(args))


def test_version_prints_the_installed_distributions_version() -> None:
    result = CliRunner().invoke(cli.main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"warren {importlib.metadata.version('warren')}\n"


def test_a_target_names_its_script_and_optionally_its_entrypoint() -> None:
    assert cli.split_target("app.py::main") == (Path("app.py"), "main")
    assert cli.split_target("dir/app.py") == (Path("dir/app.py"), None)
    with pytest.raises(click.BadParameter):
        cli.split_target("app.py::")


def test_entrypoint_parameters_become_options_typed_from_the_signature() -> None:
    assert arguments("--x", "5", "--name", "b", "--flag", "--ratio", "0.5") == {
        "x": 5,
        "name": "b",
        "flag": True,
        "ratio": 0.5,
    }
    assert arguments("--x", "-1", "--no-flag") == {
        "x": -1,
        "name": "a",
        "flag": False,
        "ratio": None,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Missing"),
        (("--x", "five"), "'five' is not a valid integer"),
        (("--x", "1", "--colour", "red"), "No such option"),
    ],
)
def test_a_missing_bad_or_unknown_option_is_a_usage_error(
    args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(click.UsageError, match=message):
        arguments(*args)


def test_underscored_parameters_take_dashed_or_underscored_options() -> None:
    def fn(max_items: int, dry_run: bool = False) -> None:
        pass

    for spelling in (["--max-items", "3", "--dry-run"], ["--max_items", "3", "--dry_run"]):
        kwargs = cli.entrypoint_arguments("p", fn, spelling)
        assert kwargs == {"max_items": 3, "dry_run": True}


def test_a_parameter_the_command_line_cannot_give_is_a_usage_error() -> None:
    def fn(items: list[int]) -> None:
        pass

    with pytest.raises(click.UsageError, match="only int, float, str and bool"):
        cli.entrypoint_arguments("p", fn, [])


def test_run_reports_a_bad_option_before_starting_the_app(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    for target in ([f"{script}::main"], [str(script), "main"], [str(script)]):
        result = CliRunner().invoke(cli.main, ["run", *target, "--x", "nope"])
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--x'" in result.output
    help_text = CliRunner().invoke(cli.main, ["run", str(script), "--help"]).output
    assert "--flag / --no-flag" in help_text and "Say hello." in help_text
    missing = CliRunner().invoke(cli.main, ["run", f"{script}::other"])
    assert missing.exit_code == 2 and "no local entrypoint named 'other'" in missing.output


def test_web_urls_are_the_deployed_apps_web_endpoints(tmp_path: Path) -> None:
    script = tmp_path / "webapp.py"
    script.write_text(SCRIPT)
    app = next(v for v in vars(load_script(script)).values() if isinstance(v, warren.App))
    packed = app.code().pack()
    assert packed.web_urls("renamed", "http://127.0.0.1:8123") == [
        f"http://127.0.0.1:8123/{app.environment}/renamed/hello"
    ]
    assert packed.web_urls("renamed", "") == []


def test_uptime_is_shown_in_at_most_two_units() -> None:
    assert [cli.format_uptime(s) for s in (0.4, 42, 185, 7620, 273600)] == [
        "0s",
        "42s",
        "3m05s",
        "2h07m",
        "3d04h",
    ]


def test_the_container_table_has_a_header_and_a_line_per_container_in_aligned_columns() -> None:
    containers = (
        ContainerInfo("3f2a9c81d0e4", "shop", "square", "primary", 4101, 2, 5, 75.0, "ready"),
        ContainerInfo("0b7c1d22e9aa", "shop", "resize.v1", "gpu-1", 88, 0, 0, 3.0, "starting"),
    )
    header, *rows = cli.container_rows(containers)
    assert header.split() == [
        "ID",
        "APP",
        "FUNCTION",
        "NODE",
        "PID",
        "RUNNING",
        "HELD",
        "STATE",
        "UPTIME",
    ]
    assert rows[0].split() == [
        "3f2a9c81d0e4",
        "shop",
        "square",
        "primary",
        "4101",
        "2",
        "5",
        "ready",
        "1m15s",
    ]
    assert rows[1].split()[2:4] == ["resize.v1", "gpu-1"]
    # the pid column is right-aligned: its last digit sits under the header's last letter
    assert rows[1].index("88") + 2 == header.index("PID") + 3 == rows[0].index("4101") + 4


@pytest.mark.parametrize(("answer", "sent"), [("n\n", False), ("y\n", True)])
def test_dead_purge_asks_first_and_sends_nothing_unless_confirmed(
    monkeypatch: pytest.MonkeyPatch, answer: str, sent: bool
) -> None:
    requests: list[object] = []

    def control(request: Any) -> DeadInputsPurged:
        requests.append(request("main"))
        return DeadInputsPurged(3)

    monkeypatch.setattr(cli, "_use_environment", lambda environment: None)
    monkeypatch.setattr(cli, "_control", control)
    result = CliRunner().invoke(cli.main, ["dead", "purge"], input=answer)
    assert "remove every dead-lettered input of environment" in result.output
    if sent:
        assert result.exit_code == 0
        assert requests == [PurgeDeadInputs("main")]
        assert "purged 3 dead-lettered inputs" in result.output
    else:
        assert result.exit_code == 1 and "Aborted" in result.output
        assert requests == []
