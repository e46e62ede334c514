"""Making volumes visible inside a container at the paths a function asked for.

A container that has volumes enters a mount namespace of its own and bind-mounts each
volume's directory (``<state dir>/volumes/<environment>/<name>``) at its path, so two
functions on one node can use the same path for different volumes. Where the engine
may not create mount namespaces (no ``CAP_SYS_ADMIN``), the path becomes a symbolic
link to the directory instead, if nothing else is there. Either way the directory is
also in ``WARREN_VOLUME_<NAME>`` (upper case, ``-`` as ``_``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

import structlog
from warren.exceptions import EngineError

log = structlog.get_logger(__name__)

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def volume_variable(name: str) -> str:
    return "WARREN_VOLUME_" + name.upper().replace("-", "_")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _own_mount_namespace() -> bool:
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        return False
    # Mounts made here must not propagate back to the host's namespace.
    return bool(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) == 0)


def _bind(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if _libc().mount(bytes(source), bytes(target), None, MS_BIND, None) != 0:
        errno = ctypes.get_errno()
        raise EngineError(f"cannot mount volume {source} at {target}: {os.strerror(errno)}")


def _link(source: Path, target: Path) -> None:
    """A symbolic link at ``target``; only the variable when the path cannot be made."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source, target_is_directory=True)
    except FileExistsError:
        # Another container of the node made the same link a moment ago, or it is left
        # from an earlier run: fine if it leads to this volume.
        if not (target.is_symlink() and target.resolve() == source.resolve()):
            raise EngineError(
                f"cannot mount a volume at {target}: something else is there, and this "
                "engine may not create mount namespaces (it needs CAP_SYS_ADMIN)"
            ) from None
    except OSError as exc:
        log.warning("volume_path_not_made", path=str(target), reason=str(exc))


def mount_volumes(volumes: dict[str, tuple[str, str]]) -> None:
    """Mount ``{path: (volume name, directory)}`` in this (container) process."""
    if not volumes:
        return
    namespaced = _own_mount_namespace()
    for path, (name, directory) in volumes.items():
        source = Path(directory)
        (_bind if namespaced else _link)(source, Path(path))
        os.environ[volume_variable(name)] = directory
    log.debug("volumes_mounted", paths=sorted(volumes), namespaced=namespaced)
