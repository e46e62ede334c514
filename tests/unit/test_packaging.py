"""What ``pip install .`` puts into site-packages: Warren's two packages, and nothing generic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_installing_the_project_puts_only_warren_and_warren_engine_into_site_packages(
    tmp_path: Path,
) -> None:
    # Given the repository, When it is installed as a user installs it (a wheel built by
    # the project's build backend, unpacked into a fresh target directory)
    target = tmp_path / "site-packages"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # Then the import packages are warren and warren_engine, with their type markers
    installed = {path.name for path in target.iterdir() if path.name != "bin"}
    packages = {name for name in installed if not name.endswith(".dist-info")}
    assert packages == {"warren", "warren_engine"}
    assert (target / "warren" / "py.typed").exists()
    assert (target / "warren" / "wire" / "codec.py").exists()
    assert (target / "warren_engine" / "container" / "main.py").exists()
    # And the dashboard's page, script and style sheet, which the engine serves from there
    static = target / "warren_engine" / "daemon" / "dashboard" / "static"
    assert {"index.html", "dashboard.js", "dashboard.css"} <= {p.name for p in static.iterdir()}
    # And the console script is warren, and `import warren` works from that directory alone
    assert (target / "bin" / "warren").exists()
    probe = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(target)!r}); import warren, warren_engine; "
            "print(warren.__file__); print(warren.App('x'))",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.splitlines()[0].startswith(str(target))
    assert "x" in probe.stdout.splitlines()[1]
