"""Whole scripts in their own processes: python script.py, warren run, asyncio.run, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from support import REPO, run_python, wait_until

SCRIPT = textwrap.dedent(
    """
    import os
    import warren

    app = warren.App("script-app")

    @app.function()
    def square(x):
        return x * x

    @app.function()
    async def shout(s):
        return s.upper() + "!"

    @app.local_entrypoint()
    def main():
        print("square", square.remote(7), "shout", shout.remote("hi"))
        print("pids", app._run.engine.pid,
              *square.get_current_stats()["pids"], *shout.get_current_stats()["pids"])

    if __name__ == "__main__":
        with app.run():
            main()
    """
)


def _pids(output: str) -> list[int]:
    line = next(line for line in output.splitlines() if line.startswith("pids"))
    return [int(word) for word in line.split()[1:]]


def _gone(pids: list[int]) -> bool:
    return not any(
        psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
    )


@pytest.mark.parametrize("how", ["python", "warren run"])
def test_a_script_prints_results_and_leaves_no_process(tmp_path: Path, how: str) -> None:
    # Given a script whose functions are defined in __main__, and no engine running
    script = tmp_path / "script_app.py"
    script.write_text(SCRIPT)
    if how == "python":
        command = [sys.executable, "-W", "error", str(script)]
    else:
        command = [str(Path(sys.executable).with_name("warren")), "run", str(script)]
    # When it runs, Then it prints the results computed in containers
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "square 49 shout HI!" in out
    # And the engine it started and the containers are gone afterwards
    pids = _pids(out)
    assert len(pids) == 3  # the engine it started, and one container per function
    assert wait_until(lambda: _gone(pids), 10)


def test_remote_aio_under_two_asyncio_runs_prints_no_warning(tmp_path: Path) -> None:
    script = tmp_path / "twice.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            import warren

            app = warren.App("aio-twice")

            @app.function()
            async def double(x):
                return 2 * x

            async def main(x):
                return await double.remote.aio(x)

            with app.run():
                print(asyncio.run(main(1)), asyncio.run(main(2)))
            """
        )
    )
    result = run_python("-W", "error", "-X", "dev", str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2 4"
    assert result.stderr == ""


def test_ctrl_c_cancels_the_running_remote_call(tmp_path: Path) -> None:
    marker = tmp_path / "call"
    script = tmp_path / "interrupted.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            from pathlib import Path
            import warren

            app = warren.App("ctrl-c")

            @app.function()
            async def slow(path):
                Path(path + ".started").touch()
                await asyncio.sleep(40)
                Path(path + ".finished").touch()

            with app.run():
                slow.remote(sys.argv[1])
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marker)], stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_until(lambda: Path(f"{marker}.started").exists(), 60)
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    # Without the cancel, stopping the app would wait for the 40 s call to finish.
    assert time.monotonic() - interrupted < 20
    assert "KeyboardInterrupt" in err
    assert not Path(f"{marker}.finished").exists()


def test_the_hello_example_runs() -> None:
    result = run_python("-W", "error", str(REPO / "examples" / "hello.py"))
    assert result.returncode == 0, result.stderr
    assert "square.remote(7) = 49" in result.stdout
    assert "fail.remote(3) raised ValueError: bad x: 3" in result.stdout
