"""The rooms of the house, and which way imports may run between them.

Read from the source with ``ast`` (imports under ``TYPE_CHECKING`` count too), so a
wrong arrow fails here, not in a reviewer's head. ``docs/architecture.md`` draws the
same rooms.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"warren": ROOT / "sdk" / "warren", "warren_engine": ROOT / "engine" / "warren_engine"}

USER_FACING = ("warren.app", "warren.function", "warren.function_call", "warren.options")
USER_FACING += ("warren.secrets", "warren.volumes", "warren.web")
FOUNDATION = ("warren.exceptions", "warren.names", "warren.config")

# module prefix -> the prefixes of Warren's own modules it may import
RULES: dict[str, tuple[str, ...]] = {
    "warren.exceptions": (),
    "warren.names": ("warren.exceptions",),
    "warren.config": ("warren.exceptions", "warren.names"),
    "warren.wire": (*FOUNDATION, "warren.wire"),
    "warren.client": (*FOUNDATION, "warren.wire", "warren.client"),
    "warren_engine.pipe": (*FOUNDATION, "warren.wire", "warren_engine.pipe"),
    "warren_engine.container": (
        *FOUNDATION,
        "warren.wire",
        "warren.client",
        "warren_engine.pipe",
        "warren_engine.container",
        "warren_engine.logs",  # a container process is an entry point: it sets up logging
    ),
    "warren_engine.pool": (
        *FOUNDATION,
        "warren.wire",
        "warren.client",
        "warren_engine.pipe",
        "warren_engine.container",
        "warren_engine.pool",
        "warren_engine.publisher",
        "warren_engine.queue_probe",
    ),
    # An engine node among its peers: above the pools it shares out, below the daemon.
    "warren_engine.cluster": (
        *FOUNDATION,
        "warren.wire",
        "warren_engine.pool",
        "warren_engine.cluster",
    ),
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, directory in PACKAGES.items():
        for path in directory.rglob("*.py"):
            parts = [package, *path.relative_to(directory).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


MODULES = _modules()


def test_the_sdk_never_imports_the_engine() -> None:
    wrong = {
        module: sorted(name for name in _imports(path) if name.startswith("warren_engine"))
        for module, path in MODULES.items()
        if module.startswith("warren.") or module == "warren"
    }
    assert {module: names for module, names in wrong.items() if names} == {}


@pytest.mark.parametrize("room", sorted(RULES))
def test_each_room_imports_only_the_rooms_below_it(room: str) -> None:
    allowed = RULES[room]
    wrong = {}
    for module, path in MODULES.items():
        if not _within(module, (room,)):
            continue
        # `from warren.wire import naming` names the package and the module: judge the module
        outside = {name for name in _imports(path) if not _within(name, allowed)}
        outside -= {name for name in outside if any(_within(o, (name,)) for o in outside - {name})}
        outside = {name for name in outside if name not in ("warren", "warren_engine")}
        if outside:
            wrong[module] = sorted(outside)
    assert wrong == {}


def test_the_wire_layer_knows_nothing_of_the_user_facing_layer() -> None:
    for module, path in MODULES.items():
        if _within(module, ("warren.wire",)):
            assert not {name for name in _imports(path) if _within(name, USER_FACING)}, module


def test_every_test_module_has_a_basename_of_its_own() -> None:
    # pytest imports test modules by basename (tests/ has no packages): two test_x.py
    # in unit/ and integration/ stop the whole suite at collection.
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(name for name in set(names) if names.count(name) > 1) == []
