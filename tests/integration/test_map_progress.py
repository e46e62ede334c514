"""map's live progress line under warren.enable_output(): on a terminal, and never on pipes."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio
    import time
    import warren

    app = warren.App("progress-app")

    @app.function(max_inputs=8)
    def square(x):
        time.sleep(0.002)
        return x * x

    @app.function(max_inputs=8)
    async def add(x, y):
        return x + y

    async def two_at_once():
        async def summed():
            return sum([r async for r in add.starmap.aio([(i, 1) for i in range(120)])])

        async def squared():
            return sum([r async for r in square.for_each.aio(range(80))])

        return await asyncio.gather(summed(), squared())

    if __name__ == "__main__":
        with app.run(), warren.enable_output():
            print("squares", sum(square.map(range(300))), flush=True)
            print("both", *asyncio.run(two_at_once()), flush=True)
    """
)
ENTRYPOINT = textwrap.dedent(
    """
    import warren

    app = warren.App("progress-entrypoint")

    @app.function(max_inputs=8)
    def square(x):
        return x * x

    @app.local_entrypoint()
    def main():
        print("squares", sum(square.map(range(300))), flush=True)
    """
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _run_on_a_terminal(command: list[str], cwd: Path) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; return what it drew."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: every holder of the terminal's other side is gone
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def test_a_map_on_a_terminal_shows_a_progress_line_that_reaches_all_its_inputs(
    tmp_path: Path,
) -> None:
    # Given a script that maps 300 inputs, then two .aio maps at once, under enable_output
    script = tmp_path / "map_progress_app.py"
    script.write_text(SCRIPT)
    # When it runs on a terminal
    code, drawn = _run_on_a_terminal([sys.executable, str(script)], tmp_path)
    text = ANSI.sub("", drawn)
    assert code == 0, text
    assert f"squares {sum(x * x for x in range(300))}" in text
    assert f"both {sum(range(120)) + 120} {sum(x * x for x in range(80))}" in text
    # Then each map had its line, up to all of its inputs done
    assert re.search(r"square\.map .*300/300  sent 300  failed 0", text), text
    assert re.search(r"add\.starmap .*120/120", text), text
    assert re.search(r"square\.for_each .*80/80", text), text
    # And the display was erased at the end: the cursor shown again, no line left over
    assert "\x1b[?25h" in drawn


def test_warren_run_shows_the_progress_of_its_entrypoints_maps(tmp_path: Path) -> None:
    # Given a script whose local entrypoint maps 300 inputs, and no enable_output of its own
    script = tmp_path / "map_progress_entrypoint.py"
    script.write_text(ENTRYPOINT)
    # When warren run runs it on a terminal
    warren = str(Path(sys.executable).with_name("warren"))
    code, drawn = _run_on_a_terminal([warren, "run", str(script)], tmp_path)
    text = ANSI.sub("", drawn)
    # Then its map had a progress line, up to all of its inputs done
    assert code == 0, text
    assert f"squares {sum(x * x for x in range(300))}" in text
    assert re.search(r"square\.map .*300/300", text), text


def test_a_map_without_a_terminal_prints_no_progress(tmp_path: Path) -> None:
    # Given the same script, run with pipes for its output
    script = tmp_path / "map_progress_app.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=90,
    )
    # Then it prints its results and nothing of a progress line
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"squares {sum(x * x for x in range(300))}"
    assert "300/300" not in proc.stdout + proc.stderr
    assert "sent" not in proc.stdout + proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr
