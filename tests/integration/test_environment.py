"""env= and secrets=: what a function's containers find in their environment."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import warren
from support import EngineProcess, engine_running

app = warren.App("test-environment")


@app.function()
def read_env(*names: str) -> list[str | None]:
    return [os.environ.get(name) for name in names]


@pytest.fixture
def logged_engine(tmp_path: Path) -> Iterator[EngineProcess]:
    """An engine daemon whose log (its containers' too) the test can read, at debug level."""
    env = {"WARREN_LOG_LEVEL": "debug"}
    with engine_running(tmp_path / "state", env, log=tmp_path / "engine.log") as daemon:
        yield daemon


def warren_cli(*args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "warren"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_env_and_secrets_reach_the_function_and_never_the_logs_or_status(
    logged_engine: EngineProcess, tmp_path: Path
) -> None:
    secret_value = f"s3cr3t-{uuid.uuid4().hex}"
    app.deploy()
    handle = warren.Function.from_name("test-environment", "read_env")
    variant = handle.with_options(
        env={"A": "1", "HOME": None}, secrets=[warren.Secret.from_dict({"B": secret_value})]
    )
    # Then the function sees both, and a None value unsets a variable
    assert variant.remote("A", "B", "HOME") == ["1", secret_value, None]
    assert handle.remote("A", "B") == [None, None]  # the original is untouched
    # And the value appears neither in the engine's log nor in `warren app status`
    status = warren_cli("app", "status", "test-environment", "--json")
    assert variant.spec.variant in status
    assert secret_value not in status
    log = (tmp_path / "engine.log").read_text()
    assert "variant_created" in log  # the log is the engine's, at debug level
    assert secret_value not in log


def test_a_named_secret_is_kept_by_the_engine_and_listed_without_its_value(
    logged_engine: EngineProcess, tmp_path: Path
) -> None:
    value = f"named-{uuid.uuid4().hex}"
    name = f"test-{uuid.uuid4().hex[:8]}"
    assert name in warren_cli("secret", "create", name, f"TOKEN={value}", "OTHER=x")
    listed = warren_cli("secret", "list")
    assert name in listed and "TOKEN" in listed and value not in listed
    app.deploy()
    named = warren.Function.from_name("test-environment", "read_env").with_options(
        secrets=[warren.Secret.from_name(name)]
    )
    assert named.remote("TOKEN") == [value]
    missing = warren.Function.from_name("test-environment", "read_env").with_options(
        secrets=[warren.Secret.from_name("no-such-secret")]
    )
    with pytest.raises(warren.NotFoundError, match="warren secret create no-such-secret"):
        missing.remote("TOKEN")
    warren_cli("secret", "delete", name)
    assert name not in warren_cli("secret", "list")
    assert value not in (tmp_path / "engine.log").read_text()


def test_a_dotenv_file_becomes_a_secret(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text('# settings\nexport API_KEY="abc def"\nREGION=eu\n')
    secret = warren.Secret.from_dotenv(dotenv)
    assert secret.values == {"API_KEY": "abc def", "REGION": "eu"}
    assert "abc def" not in repr(secret)
