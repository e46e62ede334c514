"""What a container of a function gets from its node: its environment and its volumes.

The environment is the function's ``env``, then its secrets (named ones from the
engine's store), then ``CUDA_VISIBLE_DEVICES`` for the GPUs it asked for. Volumes
are directories of the engine's state (see :mod:`warren_engine.container.mounts`), made when first
asked for with ``create_if_missing``.
"""

from __future__ import annotations

from pathlib import Path

from warren import exceptions
from warren.wire.spec import FunctionSpec

from warren_engine.daemon.secret_store import SecretStore
from warren_engine.pool.node_capacity import Node


class Provisions:
    def __init__(self, state_dir: Path, secrets: SecretStore, node: Node) -> None:
        self.state_dir = state_dir
        self.secrets = secrets
        self.node = node

    def environ(self, environment: str, spec: FunctionSpec) -> dict[str, str | None]:
        """A container's environment variables: env=, secrets=, and the GPUs it gets."""
        environ = self.secrets.environ(environment, spec)
        devices = self.node.cuda_visible_devices(spec)
        if devices is not None:
            environ["CUDA_VISIBLE_DEVICES"] = devices
        return environ

    def volumes(self, environment: str, spec: FunctionSpec) -> dict[str, tuple[str, str]]:
        """``{path: (name, directory)}`` of a spec's volumes, made if asked to be."""
        found = {}
        for path, volume in spec.volumes.items():
            directory = self.state_dir / "volumes" / environment / volume.name
            if not directory.is_dir():
                if not volume.create_if_missing:
                    raise exceptions.NotFoundError(
                        f"volume {volume.name!r} does not exist in environment "
                        f"{environment!r}: use Volume.from_name(..., create_if_missing=True)"
                    )
                directory.mkdir(parents=True, exist_ok=True)
            found[path] = (volume.name, str(directory))
        return found
