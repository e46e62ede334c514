"""A user's own modules named like Warren's old packages, or its engine, change nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import warren

    app = warren.App("import-names")

    @app.function()
    def double(x: int) -> int:
        return 2 * x

    @app.local_entrypoint()
    def main() -> None:
        print("results", double.remote(21), sorted(double.map(range(3))))

    if __name__ == "__main__":
        with app.run():
            main()
    """
)
# Importing any of these would end the process that did it, saying so.
SHADOWS = ("engine", "sdk", "warren_engine")


@pytest.mark.parametrize("how", ["python", "warren run"])
def test_a_script_beside_files_named_engine_sdk_and_warren_engine_gets_its_results(
    tmp_path: Path, how: str
) -> None:
    # Given a script in a directory that also holds engine.py, sdk.py and warren_engine.py
    (tmp_path / "app.py").write_text(SCRIPT)
    for name in SHADOWS:
        (tmp_path / f"{name}.py").write_text(
            f"raise SystemExit('the user module {name}.py was imported by Warren')\n"
        )
    # When it runs with that directory as its working directory
    command = (
        [sys.executable, "app.py"]
        if how == "python"
        else [str(Path(sys.executable).with_name("warren")), "run", "app.py"]
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=tmp_path)
    # Then app.run() starts its engine, and the calls return their results
    assert done.returncode == 0, done.stderr
    assert "results 42 [0, 2, 4]" in done.stdout
    assert "was imported by Warren" not in done.stderr
