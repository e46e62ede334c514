"""The engine's record of deployed apps, on disk, so that it survives a restart.

One directory per deployed app, ``<state>/apps/<environment>/<app>/``, holding the
app's code as shipped (``code-<time>.msgpack``, one per deploy) and ``app.json``, its
:class:`DeploymentRecord`: its functions' specs, the client paths, and any
``update_autoscaler`` overrides (a redeploy writes the record anew, which is what
resets them). Files are replaced atomically. A record that cannot be read is logged
and skipped: the other apps still come back.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from warren.exceptions import EngineError, InvalidError
from warren.wire import naming
from warren.wire.control import AutoscalerChanges
from warren.wire.spec import FunctionSpec

log = structlog.get_logger(__name__)

RECORD_VERSION = 1
"""The layout of ``app.json``. Files written before it carried a version have this
layout (without the field), and are read as such."""


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """What the engine keeps of a deployed app to bring it back after a restart.

    ``code`` is the name of the code file in the app's directory; ``overrides`` are
    ``update_autoscaler``'s, by pool key (a function's tag, or ``tag.variant``).
    """

    environment: str
    app: str
    specs: tuple[FunctionSpec, ...]
    code: str
    sys_path: tuple[str, ...]
    overrides: dict[str, AutoscalerChanges]
    deployed_at: float

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "version": RECORD_VERSION,
                "environment": self.environment,
                "app": self.app,
                "functions": [spec.to_wire() for spec in self.specs],
                "code": self.code,
                "sys_path": list(self.sys_path),
                "overrides": {key: _set_fields(c) for key, c in self.overrides.items()},
                "deployed_at": self.deployed_at,
            },
            option=orjson.OPT_INDENT_2,
        )

    @classmethod
    def decode(cls, data: bytes, path: Path) -> DeploymentRecord:
        """The record ``data`` holds; ``EngineError`` naming ``path`` if it is malformed.

        ``sys_path``, ``overrides`` and ``deployed_at`` may be missing (records of older
        engines lack them): none, none, and now.
        """
        try:
            fields = _Object(orjson.loads(data), "the record")
            version = fields.get("version", int, RECORD_VERSION)
            if version != RECORD_VERSION:
                raise _Malformed(f"its version {version} is not {RECORD_VERSION}")
            record = cls(
                _name("environment", fields.get("environment", str)),
                _name("app name", fields.get("app", str)),
                tuple(_spec(item) for item in fields.get("functions", list)),
                _file_name(fields.get("code", str)),
                tuple(_text(item, "a sys_path entry") for item in fields.get("sys_path", list, [])),
                {
                    key: _changes(_Object(value, f"the overrides of {key!r}"))
                    for key, value in fields.get("overrides", dict, {}).items()
                },
                float(fields.get("deployed_at", int | float, time.time())),
            )
        except orjson.JSONDecodeError as exc:
            raise EngineError(f"unreadable app record {path}: {exc}") from None
        except _Malformed as exc:
            raise EngineError(f"malformed app record {path}: {exc}") from None
        return record


class AppRecords:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "apps"

    def directory(self, environment: str, app: str) -> Path:
        return self.root / environment / app

    def code_path(self, record: DeploymentRecord) -> Path:
        return self.directory(record.environment, record.app) / record.code

    def save_code(self, environment: str, app: str, code: bytes) -> Path:
        """Store one deploy's code under a name of its own (running containers keep theirs)."""
        path = self.directory(environment, app) / f"code-{time.time_ns()}.msgpack"
        write_atomically(path, code)
        return path

    def prune_code(self, environment: str, app: str, keep: Path) -> None:
        """Remove the code files of earlier deploys."""
        for path in self.directory(environment, app).glob("code-*.msgpack"):
            if path.name != keep.name:
                path.unlink(missing_ok=True)

    def save(self, record: DeploymentRecord) -> None:
        write_atomically(
            self.directory(record.environment, record.app) / "app.json", record.encode()
        )

    def remove(self, environment: str, app: str) -> None:
        shutil.rmtree(self.directory(environment, app), ignore_errors=True)

    def load_all(self) -> list[DeploymentRecord]:
        """Every deployed app's record; one that is unreadable, malformed or without its
        code file is logged and skipped."""
        records = []
        for path in sorted(self.root.glob("*/*/app.json")):
            try:
                record = DeploymentRecord.decode(path.read_bytes(), path)
                if not self.code_path(record).is_file():
                    raise EngineError(
                        f"app record {path} names a code file {record.code!r} that is not there"
                    )
            except (OSError, EngineError) as exc:
                log.error("app_record_unreadable", path=str(path), reason=str(exc))
                continue
            records.append(record)
        return records


# -- reading a record's JSON, each value checked -------------------------------------------


class _Malformed(Exception):
    """What is wrong with a record (``DeploymentRecord.decode`` names the file)."""


class _Object:
    """A JSON object being read: each field checked for its type, named when it is wrong."""

    __slots__ = ("_values", "_what")

    def __init__(self, value: object, what: str) -> None:
        if type(value) is not dict:
            raise _Malformed(f"{what} is {type(value).__name__}, not an object")
        self._values: dict[str, Any] = value
        self._what = what

    def keys(self) -> set[str]:
        return set(self._values)

    def get(self, key: str, kind: Any, default: Any = ...) -> Any:
        """The field ``key``, of ``kind`` (a type or union); ``default`` when it is missing
        (or null), or ``_Malformed`` when there is none."""
        value = self._values.get(key)
        if value is None:
            if default is ...:
                raise _Malformed(f"{self._what} has no {key!r}")
            return default
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise _Malformed(f"{key!r} in {self._what} is {type(value).__name__} {value!r:.80}")
        return value


def _text(value: object, what: str) -> str:
    if type(value) is not str:
        raise _Malformed(f"{what} is {type(value).__name__} {value!r:.80}, not a str")
    return value


def _name(what: str, value: str) -> str:
    try:
        return naming.check_part(what, value)
    except InvalidError as exc:
        raise _Malformed(str(exc)) from None


def _file_name(value: str) -> str:
    if Path(value).name != value or value in ("", ".", ".."):
        raise _Malformed(f"its code file {value!r} is not a file name")
    return value


def _spec(value: object) -> FunctionSpec:
    if type(value) is not dict:
        raise _Malformed(f"a function is {type(value).__name__}, not an object")
    try:
        return FunctionSpec.from_wire(value)
    except (TypeError, ValueError, InvalidError) as exc:
        raise _Malformed(f"function {value.get('tag')!r}: {exc}") from None


_CHANGE_FIELDS = {field.name for field in dataclasses.fields(AutoscalerChanges)}


def _changes(fields: _Object) -> AutoscalerChanges:
    unknown = fields.keys() - _CHANGE_FIELDS
    if unknown:
        raise _Malformed(f"unknown autoscaler settings: {', '.join(sorted(unknown))}")
    window = fields.get("scaledown_window", int | float, None)
    return AutoscalerChanges(
        fields.get("min_containers", int, None),
        fields.get("max_containers", int, None),
        fields.get("buffer_containers", int, None),
        float(window) if window is not None else None,
    )


def _set_fields(changes: AutoscalerChanges) -> dict[str, int | float]:
    """The settings ``changes`` sets (the others are left out of the file)."""
    return {key: value for key, value in dataclasses.asdict(changes).items() if value is not None}
