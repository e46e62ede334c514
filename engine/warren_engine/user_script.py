"""A user's script, imported as a module: what ``warren run``, ``deploy`` and ``serve`` load.

The script is imported under its file's stem (``app.py`` is the module ``app``), never
as ``__main__``, so its ``if __name__ == "__main__":`` block does not run; its own
directory goes first on ``sys.path``, so it imports its neighbours as ``python app.py``
would.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import click
import warren


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


def single_app(module: ModuleType, path: Path) -> warren.App:
    """The one ``warren.App`` the script defines (deploy and serve take exactly one)."""
    apps = [value for value in vars(module).values() if isinstance(value, warren.App)]
    if len(apps) != 1:
        found = ", ".join(app.name for app in apps) or "none"
        raise click.UsageError(f"{path} must define exactly one warren.App (found: {found})")
    return apps[0]
