"""Shipping an app's code to the engine, once per app run or deploy.

Functions from ``__main__`` or from the app's own module travel by value (cloudpickle),
so a container needs no copy of the user's file. cloudpickle renames the source file
of code it ships to ``<dynamic-code>``; to keep remote tracebacks useful (file, line
*and* the line's text), the original file name and source travel too, and the
container puts them back and primes :mod:`linecache` with the source.
"""

from __future__ import annotations

import linecache
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

import cloudpickle

from warren.exceptions import SerializationError, VersionMismatchError
from warren.wire.codec import PICKLE_PROTOCOL, packb, unpackb
from warren.wire.protocol import python_version

_DYNAMIC = "<dynamic-code>"


def ship_by_value(module_name: str) -> None:
    """Make everything defined in the app's module travel by value, as ``__main__`` does.

    Functions, the classes and helpers they use, and arguments that are instances of
    those classes then need no copy of the user's file in the container.
    """
    module = sys.modules.get(module_name)
    if (
        module is None
        or module_name == "__main__"
        or module_name.startswith(("warren.", "warren_engine."))
    ):
        return
    if module_name not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(module)


def _source_of(module_name: str) -> tuple[str, str] | None:
    filename = getattr(sys.modules.get(module_name), "__file__", None)
    if not filename:
        return None
    try:
        with open(filename, encoding="utf-8") as handle:
            return filename, handle.read()
    except OSError:
        return None


def pack_app_code(app_name: str, raw: Mapping[str, Callable[..., Any]]) -> bytes:
    """An app's functions (by tag), with their modules' file names and sources."""
    sources = {}
    for fn in raw.values():
        module_name = getattr(fn, "__module__", None)
        if module_name and module_name not in sources and (found := _source_of(module_name)):
            sources[module_name] = found
    try:
        functions = cloudpickle.dumps(dict(raw), protocol=PICKLE_PROTOCOL)
    except Exception as exc:
        raise SerializationError(
            f"cannot ship the functions of app {app_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    return packb({"python": python_version(), "functions": functions, "sources": sources})


def check_python(blob: bytes) -> None:
    """Refuse code pickled by another Python minor version, before unpickling anything."""
    stored = unpackb(blob)
    if stored.get("python") != python_version():
        raise VersionMismatchError(
            f"the app's code was pickled by Python {stored.get('python')}, and this side runs "
            f"Python {python_version()}: client, engine and containers need the same minor version"
        )


def load_app_code(blob: bytes) -> dict[str, Callable[..., Any]]:
    """Unpickle an app's functions (runs code: only on verified blobs) and mend tracebacks."""
    check_python(blob)
    stored = unpackb(blob)
    functions: dict[str, Callable[..., Any]] = cloudpickle.loads(stored["functions"])
    sources: dict[str, list[str]] = stored.get("sources", {})
    for module_name, (filename, text) in sources.items():
        lines = text.splitlines(keepends=True)
        linecache.cache[filename] = (len(text), None, lines, filename)
        for fn in functions.values():
            _restore_filenames(fn, module_name, filename, set())
    return functions


def _restore_filenames(fn: Any, module_name: str, filename: str, seen: set[int]) -> None:
    if id(fn) in seen or not isinstance(fn, types.FunctionType) or fn.__module__ != module_name:
        return
    seen.add(id(fn))
    fn.__code__ = _with_filename(fn.__code__, filename)
    for value in list(fn.__globals__.values()):
        _restore_filenames(value, module_name, filename, seen)


def _with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    if code.co_filename != _DYNAMIC:
        return code
    consts = tuple(
        _with_filename(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)
