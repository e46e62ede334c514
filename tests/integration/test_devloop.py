"""The development loop: warren run with options, warren deploy's URLs, stable URLs."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
from support import REPO, engine_running

RUN_SCRIPT = textwrap.dedent(
    """
    import warren

    app = warren.App("devloop-run")

    @app.function()
    def describe(x, name, flag):
        return f"{type(x).__name__} {x * 2} {name} {flag}"

    @app.local_entrypoint()
    def main(x: int, name: str = "a", flag: bool = False):
        print("got", describe.remote(x, name, flag))
    """
)

WEB_SCRIPT = textwrap.dedent(
    """
    import warren

    app = warren.App("devloop-web")

    @app.function()
    @warren.web_endpoint(method="GET")
    def double(x: int) -> dict:
        return {"double": 2 * x}
    """
)


def warren_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("warren")), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=REPO)


def get_json(url: str) -> tuple[int, object]:
    async def fetch() -> tuple[int, object]:
        async with aiohttp.ClientSession() as session, session.get(url) as reply:
            return reply.status, await reply.json()

    return asyncio.run(fetch())


def test_warren_run_passes_entrypoint_options_typed_from_its_signature(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(RUN_SCRIPT)
    done = warren_cli("run", f"{script}::main", "--x", "5", "--flag")
    assert done.returncode == 0, done.stderr
    assert "got int 10 a True" in done.stdout
    bad = warren_cli("run", str(script), "--x", "five")
    assert bad.returncode == 2
    assert "Invalid value for '--x'" in bad.stderr


def test_a_deployed_web_endpoint_keeps_its_url_across_engine_restarts(tmp_path: Path) -> None:
    script = tmp_path / "web.py"
    script.write_text(WEB_SCRIPT)
    state = tmp_path / "state"
    with engine_running(state) as engine:
        # Given an app deployed with a web endpoint: deploy prints its URL
        deployed = warren_cli("deploy", str(script))
        assert deployed.returncode == 0, deployed.stderr
        urls = [line.strip() for line in deployed.stdout.splitlines() if "://" in line]
        assert len(urls) == 1 and urls[0].endswith("/devloop-web/double"), deployed.stdout
        assert get_json(f"{urls[0]}?x=21") == (200, {"double": 42})
        recorded = int((state / "http-port").read_text())
        assert f":{recorded}/" in urls[0]
        # When the engine restarts: the same URL answers again
        engine.restart()
        assert get_json(f"{urls[0]}?x=4") == (200, {"double": 8})
        # When the recorded port is taken at the next start: a fresh one, recorded
        engine.stop()
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", recorded))
            squatter.listen()
            engine.start()
            moved = int((state / "http-port").read_text())
            assert moved != recorded
