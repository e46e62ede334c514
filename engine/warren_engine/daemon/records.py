"""The engine's record of deployed apps, on disk, so that it survives a restart.

One directory per deployed app, ``<state>/apps/<environment>/<app>/``, holding the
app's code as shipped (``code-<time>.msgpack``, one per deploy) and ``app.json``: its
functions' specs, the client paths, and any ``update_autoscaler`` overrides (a
redeploy writes the record anew, which is what resets them). Files are replaced
atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import structlog

log = structlog.get_logger(__name__)


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


class Registry:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "apps"

    def directory(self, environment: str, app: str) -> Path:
        return self.root / environment / app

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

    def save(self, environment: str, app: str, record: dict[str, Any]) -> None:
        write_atomically(
            self.directory(environment, app) / "app.json",
            orjson.dumps(record, option=orjson.OPT_INDENT_2),
        )

    def remove(self, environment: str, app: str) -> None:
        shutil.rmtree(self.directory(environment, app), ignore_errors=True)

    def load_all(self) -> list[dict[str, Any]]:
        """Every deployed app's record; an unreadable one is logged and skipped."""
        records = []
        for path in sorted(self.root.glob("*/*/app.json")):
            try:
                records.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError) as exc:
                log.error("app_record_unreadable", path=str(path), reason=str(exc))
        return records
